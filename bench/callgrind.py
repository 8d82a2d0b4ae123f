"""Instructions per request of the Cello bench app under callgrind (repeatable under load).

    python bench/callgrind.py [--python PY] [--app APP] [--async] [--header "Name: value"]...
                              [--requests N] [--out DIR]

Starts ``bench/apps/cello_app.py`` under ``valgrind --tool=callgrind`` with instrumentation
off, warms every endpoint up, then per endpoint: instrumentation on, N keep-alive requests
over a few connections, dump. ``--header`` adds a request header to every request (the
``cello-secure`` target's ``Authorization: Bearer ...``, as ``request_headers`` in
bench/targets.toml). Prints instructions per request per endpoint (the dump's
total divided by N); the dumps stay in ``--out`` for ``callgrind_annotate``. Only the server
runs under valgrind; this client is plain Python. Build the extension with symbols first
(``maturin develop --profile profiling``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = {
    "json": b"GET / HTTP/1.1\r\nHost: b\r\n\r\n",
    "plaintext": b"GET /plaintext HTTP/1.1\r\nHost: b\r\n\r\n",
    "users": b"GET /users/123 HTTP/1.1\r\nHost: b\r\n\r\n",
    "echo": (
        b"POST /echo HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
        b'Content-Length: 27\r\n\r\n{"message":"Hello, World!"}'
    ),
}


# The app as its `__main__` serves it, except that adaptive offload keeps every handler
# inline: under valgrind each call takes far more than the 1 ms threshold, and a handler
# moved to the thread pool would measure the pool, not the request path.
LAUNCH = """
import importlib.util, sys
from cello.config import ThreadPoolConfig
spec = importlib.util.spec_from_file_location("bench_app", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod.app.set_threadpool(ThreadPoolConfig(offload_threshold_ms=3_600_000))
mod.app.run(host="127.0.0.1", port=int(sys.argv[2]), workers=1, env="production", logs=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drive(port: int, request: bytes, total: int, conns: int) -> None:
    """Send ``total`` requests over ``conns`` keep-alive connections; every answer a 200."""
    sel = selectors.DefaultSelector()

    def connect() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        return s

    sent = done = 0
    for _ in range(min(conns, total)):
        connect().sendall(request)
        sent += 1
    while done < total:
        for key, _ in sel.select(timeout=120):
            sock, buf = key.fileobj, key.data
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("server closed a connection with a request in flight")
            buf += chunk
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = bytes(buf[:end]).decode("latin-1")
            if not head.startswith("HTTP/1.1 200"):
                raise SystemExit(f"unexpected answer: {head!r}")
            m = re.search(r"(?im)^content-length:\s*(\d+)", head)
            if m is None:
                raise SystemExit(f"no content-length: {head!r}")
            size = end + 4 + int(m.group(1))
            if len(buf) < size:
                continue
            del buf[:size]
            done += 1
            # The server closes after `limits.maxRequestsPerConnection`: reconnect, as wrk does.
            if re.search(r"(?im)^connection:\s*close", head):
                sel.unregister(sock)
                sock.close()
                sock = connect() if sent < total else None
            if sent < total:
                sock.sendall(request)
                sent += 1
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()


def control(pid: int, *args: str, port: int) -> None:
    """callgrind_control, with a request sent alongside: a process blocked in epoll only
    reads the command once something wakes it."""
    proc = subprocess.Popen(
        ["callgrind_control", *args, str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"callgrind_control {args} timed out")
        drive(port, ENDPOINTS["plaintext"], 1, 1)
        time.sleep(0.2)


def total_ir(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def measure(
    *,
    python: str,
    app: str,
    asynchronous: bool,
    endpoints: list[str],
    requests: int,
    warmup: int,
    conns: int,
    out: Path,
    label: str,
    env: dict[str, str] | None = None,
    quiet: bool = False,
) -> dict[str, float]:
    """Start the app under callgrind, measure each endpoint, return instructions per request."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(env or os.environ, CELLO_BENCH_ASYNC="1" if asynchronous else "0")
    base = out / f"{label}.cg"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={base}",
        python,
        "-c",
        LAUNCH,
        app,
        str(port),
    ]
    log = open(out / f"{label}.log", "w")  # noqa: SIM115 (closed in the finally below)
    server = subprocess.Popen(cmd, env=env, stderr=log)
    results = {}
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                drive(port, ENDPOINTS["plaintext"], 1, 1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.5)
        for name in endpoints:
            drive(port, ENDPOINTS[name], warmup, conns)
        control(server.pid, "-i", "on", port=port)
        for name in endpoints:
            control(server.pid, "-z", port=port)
            drive(port, ENDPOINTS[name], requests, conns)
            before = set(out.glob(f"{label}.cg*"))
            control(server.pid, "-d", name, port=port)
            new = sorted(set(out.glob(f"{label}.cg*")) - before, key=os.path.getmtime)
            if not new:
                raise SystemExit("no dump written")
            dump = out / f"{label}.{name}.cg"
            new[-1].rename(dump)
            results[name] = total_ir(dump) / requests
            if not quiet:
                print(f"{label} {name}: {results[name]:,.0f} instructions/request", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    return results


def add_headers(headers: list[str]) -> None:
    extra = "".join(f"{h.strip()}\r\n" for h in headers).encode("latin-1")
    if extra:
        for name, request in ENDPOINTS.items():
            ENDPOINTS[name] = request.replace(b"Host: b\r\n", b"Host: b\r\n" + extra, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--app", default=str(ROOT / "bench" / "apps" / "cello_app.py"))
    ap.add_argument("--async", dest="asynchronous", action="store_true")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--out", default="/tmp/cello-callgrind")
    ap.add_argument("--label", default="run")
    ap.add_argument("--header", action="append", default=[], help='"Name: value", sent on every request')
    ap.add_argument("endpoints", nargs="*", default=list(ENDPOINTS))
    args = ap.parse_args()
    add_headers(args.header)
    out = Path(args.out)
    results = measure(
        python=args.python,
        app=args.app,
        asynchronous=args.asynchronous,
        endpoints=args.endpoints,
        requests=args.requests,
        warmup=args.warmup,
        conns=args.conns,
        out=out,
        label=args.label,
    )
    (out / f"{args.label}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
