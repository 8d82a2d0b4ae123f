#!/usr/bin/env bash
# The peers' venv of bench/messaging (pinned by requirements-lock.txt); prints its python.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${CELLO_BENCH_CACHE:-$HOME/.cache/cello}/msgbench-peers"
PYTHON="${PYTHON:-$(command -v python3.12 || ls "$HOME"/.pyenv/versions/3.12*/bin/python3.12 | head -1)}"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV" >&2
fi
if [[ ! -f "$VENV/.peers" || "$HERE/requirements-lock.txt" -nt "$VENV/.peers" ]]; then
    "$VENV/bin/pip" install -q -r "$HERE/requirements-lock.txt" >&2
    touch "$VENV/.peers"
fi
echo "$VENV/bin/python"
