"""Transport figures of issue 12, beside run.py's HTTP/1.1 tables:

* **TLS JSON**: `GET /` over HTTPS (rustls on both sides of the comparison) with wrk, Cello
  against the hyper + rustls ceiling (`ceiling/hyper-hello <port> 1 cert key`), same run,
  interleaved; quote the ratio, never the absolute numbers (DESIGN.md §10).
* **WebSocket echo round trip**: `-c` clients (the `websockets` package), each sending a small
  text message and awaiting its echo in a loop on `/ws` of apps/cello_app.py; round trips per
  second and p50/p99 latency.

Profile as run.py's `pinned`: the server on CPU 0 (one worker), the load on CPU 1.

    python bench/transport.py                       # both figures, 3 reps of 10 s
    python bench/transport.py --only ws --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
CELLO_APP = BENCH_DIR / "apps" / "cello_app.py"
HYPER = BENCH_DIR / "ceiling" / "hyper-hello" / "target" / "release" / "hyper-hello"
WS_MESSAGE = '{"op":"echo","n":1}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") else argv


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start(argv: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        pin(0, argv), env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def certificates(folder: Path) -> tuple[str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    return str(folder / "cert.pem"), str(folder / "key.pem")


def wrk(url: str, duration: float, connections: int) -> float:
    out = subprocess.run(
        # wrk takes whole seconds only ("-d2.0s" is refused).
        pin(1, ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", url]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk run failed or saw errors:\n{out}")
    return float(m.group(1))


def tls_json(args: argparse.Namespace, cert: str, key: str) -> dict:
    hyper = args.hyper or str(HYPER)
    if not Path(hyper).exists():
        raise SystemExit(f"{hyper} is missing: cargo build --release in bench/ceiling/hyper-hello (bench/setup.sh)")
    runs: dict[str, list[float]] = {"cello": [], "hyper-rustls": []}
    for _ in range(args.reps):
        for name in runs:
            port = free_port()
            if name == "cello":
                env = {"CELLO_TLS_CERT_FILE": cert, "CELLO_TLS_KEY_FILE": key}
                proc = start([args.python, str(CELLO_APP), "--port", str(port)], port, env)
            else:
                proc = start([hyper, str(port), "1", cert, key], port)
            try:
                url = f"https://127.0.0.1:{port}/"
                wrk(url, min(3, args.duration), args.connections)  # warm-up
                runs[name].append(wrk(url, args.duration, args.connections))
            finally:
                stop(proc)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"runs": runs, "median": med, "ratio_to_hyper": med["cello"] / med["hyper-rustls"]}


async def ws_clients(port: int, clients: int, duration: float) -> tuple[int, list[float]]:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    done = 0
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        nonlocal done
        async with connect(f"ws://127.0.0.1:{port}/ws", compression=None, ping_interval=None) as ws:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await ws.send(WS_MESSAGE)
                await ws.recv()
                latencies.append(time.perf_counter() - t0)
                done += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return done, latencies


def ws_echo(args: argparse.Namespace) -> dict:
    rates, p50, p99 = [], [], []
    for _ in range(args.reps):
        port = free_port()
        proc = start([args.python, str(CELLO_APP), "--port", str(port)], port)
        try:
            asyncio.run(ws_clients(port, args.ws_clients, min(2, args.duration)))  # warm-up
            done, lat = asyncio.run(ws_clients(port, args.ws_clients, args.duration))
        finally:
            stop(proc)
        lat.sort()
        rates.append(done / args.duration)
        p50.append(lat[len(lat) // 2] * 1000)
        p99.append(lat[int(len(lat) * 0.99)] * 1000)
    return {
        "clients": args.ws_clients,
        "round_trips_per_s": statistics.median(rates),
        "p50_ms": statistics.median(p50),
        "p99_ms": statistics.median(p99),
        "runs": rates,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["tls", "ws"], help="one figure only")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--connections", type=int, default=64, help="wrk -c for TLS JSON")
    ap.add_argument("--ws-clients", type=int, default=16, help="concurrent WebSocket clients (on CPU 1)")
    ap.add_argument("--python", default=os.environ.get("BENCH_PYTHON", sys.executable))
    ap.add_argument("--hyper", help="path to the hyper-hello binary")
    ap.add_argument("--out", default=str(BENCH_DIR / "results"))
    args = ap.parse_args()
    result: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "tls"):
            result["tls_json"] = tls_json(args, *certificates(Path(tmp)))
            t = result["tls_json"]
            print(
                f"TLS JSON  cello {t['median']['cello']:.0f} req/s, hyper+rustls "
                f"{t['median']['hyper-rustls']:.0f} req/s, ratio {t['ratio_to_hyper']:.2f}"
            )
    if args.only in (None, "ws"):
        if shutil.which("taskset"):
            os.sched_setaffinity(0, {1})  # the clients run on the load CPU
        result["ws_echo"] = ws_echo(args)
        w = result["ws_echo"]
        print(
            f"WebSocket echo  {w['round_trips_per_s']:.0f} round trips/s with {w['clients']} clients, "
            f"p50 {w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"transport-{int(time.time())}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
