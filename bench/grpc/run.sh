#!/usr/bin/env bash
# Unary gRPC calls per second: Cello (examples/grpc, tonic) against grpcio's asyncio server,
# the same GetItem, one process each pinned to CPU 0, h2load pinned to CPU 1, interleaved.
#   bench/grpc/run.sh [python] [reps] [seconds]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY=${1:-$ROOT/.venv/bin/python}
REPS=${2:-3}
SECS=${3:-8}
command -v h2load >/dev/null || { echo "needs h2load (Debian: nghttp2-client)" >&2; exit 1; }
BODY=$(mktemp)
# A gRPC frame: uncompressed, length 5, GetItemRequest{sku: "A-1"}.
printf '\x00\x00\x00\x00\x05\x0a\x03A-1' > "$BODY"
GRPC_ADDRESS=127.0.0.1:50061 taskset -c 0 "$PY" "$ROOT/examples/grpc/app.py" --port 18180 >/tmp/grpc-bench-cello.log 2>&1 &
C=$!
taskset -c 0 "$PY" "$ROOT/bench/grpc/grpcio_app.py" 127.0.0.1:50062 >/tmp/grpc-bench-grpcio.log 2>&1 &
G=$!
trap 'kill $C $G 2>/dev/null; rm -f "$BODY"' EXIT
"$PY" - <<'PY'
import socket, time
for port in (50061, 50062):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise SystemExit(f"nothing on {port}")
# Both give the same answer with status OK (h2load counts HTTP 200s only).
import grpc
answers = set()
for port in (50061, 50062):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/inventory.v1.Inventory/GetItem", lambda b: b, lambda b: b)
        answers.add(call(b"\x0a\x03A-1", timeout=10))
assert len(answers) == 1, answers
PY
call() {  # port seconds
    taskset -c 1 h2load -D "$2" -c 16 -m 16 -t 1 -d "$BODY" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$1/inventory.v1.Inventory/GetItem"
}
for port in 50061 50062; do call $port 2 >/dev/null; done  # warm-up
for rep in $(seq "$REPS"); do
    for port in 50061 50062; do
        name=$([[ $port == 50061 ]] && echo cello || echo grpcio)
        out=$(call $port "$SECS")
        echo "rep $rep $name $(grep -E '^finished in' <<<"$out" | sed 's/.*, \([0-9.]*\) req\/s.*/\1 req\/s/') $(grep -E '^requests:' <<<"$out")"
    done
done
