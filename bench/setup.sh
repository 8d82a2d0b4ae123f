#!/usr/bin/env bash
# Prepare `make bench`: a venv with the pinned peers, the pure-hyper ceiling and a
# release build of Cello. Idempotent; prints the venv's python on the last line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CELLO_BENCH_CACHE:-$HOME/.cache/cello}"
VENV="$CACHE/bench-venv"
PYTHON="${PYTHON:-python3.12}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk libuv1; } >&2
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV" >&2
fi
if [[ ! -f "$VENV/.peers" || "$ROOT/bench/requirements-lock.txt" -nt "$VENV/.peers" ]]; then
    "$VENV/bin/pip" install -q -r "$ROOT/bench/requirements-lock.txt" maturin==1.16.0 >&2
    touch "$VENV/.peers"
fi
cargo build -q --release --manifest-path "$ROOT/bench/ceiling/hyper-hello/Cargo.toml" \
    --target-dir "$CACHE/target-bench" >&2
# The release profile users get from `pip install .` (fat LTO).
(cd "$ROOT" && VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" build --release -q -i "$VENV/bin/python" \
    -o "$CACHE/wheels" >&2)
WHEEL="$(ls -t "$CACHE"/wheels/cello_framework-*.whl | head -1)"
# Replace Cello itself without touching the pinned peers, then add what it needs (graphql-core).
"$VENV/bin/pip" install -q --force-reinstall --no-deps "$WHEEL" >&2
"$VENV/bin/pip" install -q "$WHEEL" >&2
echo "$VENV/bin/python"
