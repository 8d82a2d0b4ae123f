#!/usr/bin/env bash
# Install Debian's headless-capable chromium for the dashboard screenshot test
# (tests/integration/test_es_app.py). Idempotent; CI fails that test when chromium is missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version | head -1
