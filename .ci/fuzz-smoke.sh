#!/usr/bin/env bash
# The short fuzz run of CI: every cargo-fuzz target for FUZZ_SECONDS (default 15) over its
# committed corpus (`make fuzz-smoke`). Installs cargo-fuzz (pinned) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
make fuzz-smoke FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
