#!/usr/bin/env bash
# `pip install .` at the repository root, as a user would, into a fresh virtualenv of the
# oldest supported Python (3.10 when available), then import and serve one request.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=""
for p in python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python3.10 python3; do
    if "$p" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then PY=$p; break; fi
done
[[ -n "$PY" ]] || { echo "no Python 3.10+ found" >&2; exit 1; }
VENV="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$VENV")"' EXIT
"$PY" -m venv "$VENV"
# Its own target dir: the release profile (fat LTO) differs from the test builds.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cello/target}-install" "$VENV/bin/pip" install -q "$ROOT"
cd "$(dirname "$VENV")"  # not the repo: the installed package must be the one imported
"$VENV/bin/python" - <<'PY'
import sys, threading, time, urllib.request
import cello
from cello import App
assert "site-packages" in cello.__file__, cello.__file__
app = App()
@app.get("/")
def index(request):
    return {"version": cello.__version__}
t = threading.Thread(target=lambda: app.run(port=8765, env="production"), daemon=True)
t.start()
for _ in range(100):
    try:
        body = urllib.request.urlopen("http://127.0.0.1:8765/").read()
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("the installed package did not serve")
app.stop()
t.join(10)
print(f"pip install . OK on Python {sys.version.split()[0]}: {body.decode()}")
PY
test -x "$VENV/bin/cello"
