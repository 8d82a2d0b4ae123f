# The only place commands are written down. `make help` lists the targets.
SHELL := /bin/bash
# The newest interpreter that runs: 3.12+ gives eager asyncio tasks (see ARCHITECTURE.md).
PYTHON ?= $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12 python3.13 \
	$(HOME)/.pyenv/versions/3.13*/bin/python3.13 python3; do $$p -c 'import sys' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV ?= .venv
PY := $(VENV)/bin/python
export CARGO_TARGET_DIR ?= $(HOME)/.cache/cello/target
PROFILE ?= fast
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help venv build run test test-rust test-python test-operator test-install lint fmt generate bench clean \
	fuzz-smoke soak test-perf perf-baseline

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')

$(VENV)/.deps-$(PYVER): requirements-dev.txt
	@# A venv of another interpreter version is rebuilt from scratch.
	@test -f $(VENV)/.deps-$(PYVER) || rm -rf $(VENV)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.deps-$(PYVER) ## create the virtualenv with pinned dev dependencies

build: venv ## build the extension into the virtualenv (maturin develop)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --profile $(PROFILE) -q

run: build ## serve examples/hello on $(HOST):$(PORT)
	$(PY) examples/hello/app.py --host $(HOST) --port $(PORT)

test: build test-rust test-python test-operator test-install test-perf ## everything: Rust, Python, operator, install, instruction counts

test-rust: ## Rust unit and integration tests
	cargo test --workspace --locked

test-python: build ## black-box pytest suites (real servers, real sockets)
	cargo build -q --locked -p cello-server --bin cello-dataplane
	$(PY) -m pytest -q --ignore=tests/operator

test-operator: venv ## CRD drift, manifests against real Kubernetes schemas, helm lint/template
	cargo run -q --locked -p cello-operator --bin crdgen -- --check
	PYTHON=$(PY) tests/operator/run.sh

test-perf: build ## instruction counts of a fixed request mix under callgrind, against bench/instructions-baseline.json (fails on > 5 % growth)
	$(PY) bench/instructions_check.py

perf-baseline: build ## record bench/instructions-baseline.json from this build (after a deliberate change)
	$(PY) bench/instructions_check.py --record

test-install: ## `pip install .` into a fresh Python 3.10+ virtualenv, then serve a request
	tests/install_check.sh

generate: ## regenerate the CRD, chart schema, RBAC, docs/config.md and docs/env.md from the Rust types
	cargo run -q -p cello-operator --bin crdgen -- --write

lint: venv ## formatting and lints (what CI checks)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: venv ## format everything
	cargo fmt --all
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

BENCH_ARGS ?= --profile pinned --reps 3 --baseline hyper cello cello-async hyper granian-rsgi socketify robyn \
	granian-blacksheep uvicorn-fastapi

bench: ## wrk against Cello and its peers (see bench/README.md)
	BPY=$$(bench/setup.sh | tail -1) && HYPER_HELLO_BIN=$(HOME)/.cache/cello/target-bench/release/hyper-hello \
		$$BPY bench/run.py $(BENCH_ARGS)

# cargo-fuzz needs nightly features: RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
FUZZ_TARGETS ?= router path_query form multipart json_read json_write
FUZZ_SECONDS ?= 15
fuzz-smoke: ## a short run of every fuzz target over its committed corpus (needs `cargo install cargo-fuzz`)
	@# New inputs go to a scratch directory (the first one), so the committed corpus stays as it is.
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		scratch=$$(mktemp -d) && \
		RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)-fuzz cargo fuzz run -O $$t $$scratch corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -rss_limit_mb=2048 || exit 1; \
		rm -rf $$scratch; \
	done

SOAK_MINUTES ?= 10
soak: build ## mixed load + worker SIGKILLs/SIGHUPs against `cello run --workers 2` (not in CI)
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

clean: ## remove the virtualenv and build output
	rm -rf $(VENV) dist build
