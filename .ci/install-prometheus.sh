#!/usr/bin/env bash
# Install the Prometheus server (Debian package) for tests/integration/test_prometheus.py.
# Idempotent; CI fails that test when prometheus is missing.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package may start a system service; the tests run their own server on a free port.
(command -v systemctl >/dev/null && $SUDO systemctl disable --now prometheus >/dev/null 2>&1) || true
prometheus --version | head -1
