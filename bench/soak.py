"""Soak check (`make soak`, not in CI): N minutes of mixed load against `cello run --workers 2`
with periodic worker SIGKILLs and SIGHUPs (rolling restarts). Every 30 s it prints requests
served, failed requests (connection errors and 5xx; "by kills": those within 2 s after a
SIGKILL; "by hups": the others within 10 s after a SIGHUP), worker restarts and the RSS of the
whole process tree, then a summary. Exit code 1 when the service stopped answering at the end.

    python bench/soak.py --minutes 2 [--concurrency 32] [--kill-every 20] [--hup-every 45]

A request in flight on a worker that is SIGKILLed fails by nature; the figure to watch is
failures outside those moments, restarts that keep happening, and RSS that keeps growing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def rss_mib(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


# A failure this close after a worker SIGKILL is put down to the kill (requests in flight on
# the killed worker, and connections the kernel had queued on its listener, fail by nature).
KILL_WINDOW = 2.0
# A rollout of two workers (plus the old ones' drain) is over well within this.
HUP_WINDOW = 10.0


class Stats:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.failed_at: list[float] = []
        self.kills_at: list[float] = []
        self.hups_at: list[float] = []

    def fail(self, what: str) -> None:
        self.failed += 1
        self.errors[what] = self.errors.get(what, 0) + 1
        self.failed_at.append(time.monotonic())

    def after_kills(self) -> int:
        """Failures within KILL_WINDOW after a SIGKILL (the rest: SIGHUPs, or a defect)."""
        return sum(self._after_kill(t) for t in self.failed_at)

    def _after_kill(self, t: float) -> bool:
        return any(0 <= t - k <= KILL_WINDOW for k in self.kills_at)

    def after_hups(self) -> int:
        """Failures not put down to a kill, within HUP_WINDOW after a SIGHUP (a rolling restart
        should lose none)."""
        return sum(
            not self._after_kill(t) and any(0 <= t - h <= HUP_WINDOW for h in self.hups_at) for t in self.failed_at
        )


async def client(base: str, stats: Stats, stop: asyncio.Event, static_name: str) -> None:
    payload = {"items": list(range(50)), "nested": {"a": [1, 2, {"b": "c" * 100}]}}
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        while not stop.is_set():
            kind = random.choice(["json", "json", "echo", "stream", "static", "wait"])
            try:
                if kind == "json":
                    r = await http.get("/json")
                elif kind == "echo":
                    r = await http.post("/echo", json=payload)
                    if r.status_code == 200 and r.json() != payload:
                        stats.fail("echo mismatch")
                        continue
                elif kind == "stream":
                    r = await http.get("/stream")
                    if r.status_code == 200 and len(r.content) != 16 * 64 * 11:
                        stats.fail("short stream")
                        continue
                elif kind == "static":
                    r = await http.get(f"/static/{static_name}")
                else:
                    r = await http.get("/wait")
            except httpx.HTTPError as exc:
                stats.fail(type(exc).__name__)
                continue
            if r.status_code >= 500:
                stats.fail(f"HTTP {r.status_code}")
            else:
                stats.ok += 1


async def soak(args) -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    static = tempfile.mkdtemp(prefix="cello-soak-")
    Path(static, "asset.bin").write_bytes(os.urandom(32 * 1024))
    env = {**os.environ, "SOAK_STATIC": static, "PYTHONUNBUFFERED": "1"}
    log = open(Path(static, "server.log"), "wb")  # noqa: SIM115 -- lives as long as the server
    cmd = [sys.executable, "-m", "cello", "run", "bench/soak_app.py", "--port", str(port), "--workers", "2",
           "--max-restarts", str(args.max_restarts)]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print("server did not start; log:", Path(static, "server.log").read_text()[-2000:])
                return 1
            await asyncio.sleep(0.2)
        stats, stop = Stats(), asyncio.Event()
        tasks = [asyncio.create_task(client(base, stats, stop, "asset.bin")) for _ in range(args.concurrency)]
        seen: set[int] = set(children(server.pid))
        start = time.monotonic()
        next_kill, next_hup, next_report = start + args.kill_every, start + args.hup_every, start + 30
        kills = hups = 0
        rows = []
        print(f"soak: {args.minutes} min, {args.concurrency} clients, SIGKILL a worker every {args.kill_every} s,"
              f" SIGHUP every {args.hup_every} s; log {static}/server.log")  # fmt: skip
        header = (("t(s)", 5), ("ok", 8), ("failed", 7), ("by kills", 8), ("by hups", 7), ("req/s", 7),
                  ("kills", 5), ("hups", 4), ("new pids", 8))  # fmt: skip
        print(" ".join(f"{name:>{width}}" for name, width in header), f"{'RSS MiB':>8}")
        last_ok, last_t = 0, start
        while time.monotonic() - start < args.minutes * 60:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            workers = children(server.pid)
            seen.update(workers)
            if args.kill_every > 0 and now >= next_kill and workers:
                os.kill(random.choice(workers), signal.SIGKILL)
                stats.kills_at.append(time.monotonic())
                kills += 1
                next_kill = now + args.kill_every
            if args.hup_every > 0 and now >= next_hup:
                server.send_signal(signal.SIGHUP)
                stats.hups_at.append(time.monotonic())
                hups += 1
                next_hup = now + args.hup_every
            if now >= next_report:
                rss = rss_mib([server.pid, *workers])
                rate = (stats.ok - last_ok) / (now - last_t)
                restarts = len(seen) - 2
                by_kills, by_hups = stats.after_kills(), stats.after_hups()
                rows.append({"t": round(now - start), "ok": stats.ok, "failed": stats.failed, "by_kills": by_kills,
                             "by_hups": by_hups, "rps": round(rate), "kills": kills, "hups": hups,
                             "restarts": restarts, "rss_mib": round(rss, 1)})  # fmt: skip
                print(f"{now - start:5.0f} {stats.ok:8d} {stats.failed:7d} {by_kills:8d} {by_hups:7d} {rate:7.0f}"
                      f" {kills:5d} {hups:4d} {restarts:8d} {rss:8.1f}", flush=True)  # fmt: skip
                last_ok, last_t, next_report = stats.ok, now, now + 30
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(2)  # the last replacement comes up
        try:
            alive = httpx.get(base + "/json", timeout=5).status_code == 200
        except httpx.HTTPError:
            alive = False
        print(f"summary: {stats.ok} ok, {stats.failed} failed ({stats.errors}; {stats.after_kills()} within"
              f" {KILL_WINDOW:.0f} s after a SIGKILL, {stats.after_hups()} others within {HUP_WINDOW:.0f} s after a"
              f" SIGHUP), {kills} worker kills, {hups} SIGHUPs,"
              f" {len(seen) - 2} workers started after the first two, answering at the end: {alive}")  # fmt: skip
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "errors": stats.errors, "alive": alive}, indent=1))
        return 0 if alive else 1
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--kill-every", type=float, default=20, help="seconds between worker SIGKILLs (0: none)")
    p.add_argument("--hup-every", type=float, default=45, help="seconds between SIGHUPs (rolling restarts; 0: none)")
    p.add_argument("--max-restarts", type=int, default=5, help="passed to cello run (the default is cello's)")
    p.add_argument("--json", help="also write the 30 s rows to this file")
    return asyncio.run(soak(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
