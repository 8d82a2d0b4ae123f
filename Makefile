# The only place commands are written down. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export CARGO_TARGET_DIR ?= $(HOME)/.cache/cello/target
PROFILE ?= fast
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help venv build run test test-rust test-python lint fmt bench clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.deps: requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.deps ## create the virtualenv with pinned dev dependencies

build: venv ## build the extension into the virtualenv (maturin develop)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --profile $(PROFILE) -q

run: build ## serve examples/hello on $(HOST):$(PORT)
	$(PY) examples/hello/app.py --host $(HOST) --port $(PORT)

test: build test-rust test-python ## everything: Rust and Python suites

test-rust: ## Rust unit and integration tests
	cargo test --workspace --locked

test-python: build ## black-box pytest suites
	$(PY) -m pytest -q

lint: venv ## formatting and lints (what CI checks)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: venv ## format everything
	cargo fmt --all
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove the virtualenv and build output
	rm -rf $(VENV) dist build
