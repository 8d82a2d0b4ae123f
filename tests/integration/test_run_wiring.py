"""How `cello run` / `app.run()` wire observability: metrics totals across workers without any
setup, worker counts and restarts from the supervisor, health on by default, JSON logs."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import ROOT, cello_procs, free_port

__all__ = ["cello_procs"]  # the fixture
pytestmark = pytest.mark.timeout(60)

OBS_APP = ROOT / "tests" / "apps" / "obs_app.py"


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        # Greedy: label values may contain braces (route templates).
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        if all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            total += float(m.group(3))
    return total


def _eventually(fn, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_workers_share_metrics_and_report_restarts_without_setup(cello_procs):
    port = free_port()
    proc = cello_procs.start(
        ["run", str(OBS_APP), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"], port=port
    )
    proc.wait_http("/health/live")
    for _ in range(60):
        assert httpx.get(proc.url("/users/7")).status_code == 200

    def every_scrape_has_the_total():
        for _ in range(6):  # scrapes land on either worker
            text = httpx.get(proc.url("/metrics")).text
            count = _metric(text, "http_server_request_duration_seconds_count", http_route="/users/{id:int}")
            assert count == 60, count
            assert _metric(text, "cello_workers") == 2

    _eventually(every_scrape_has_the_total)
    victim = proc.workers()[0]
    os.kill(victim, signal.SIGKILL)

    def restarted():
        text = httpx.get(proc.url("/metrics")).text
        assert _metric(text, "cello_worker_restarts_total") == 1
        assert _metric(text, "cello_workers") == 2
        count = _metric(text, "http_server_request_duration_seconds_count", http_route="/users/{id:int}")
        assert count >= 60, "a counter dropped when its worker died"

    _eventually(restarted, timeout=10)


def test_cello_run_serves_health_probes_by_default(cello_procs):
    port = free_port()
    app_file = ROOT / "tests" / "apps" / "cli_app.py"
    proc = cello_procs.start(["run", str(app_file), "--host", "127.0.0.1", "--port", str(port)], port=port)
    proc.wait_http()
    assert httpx.get(proc.url("/health/live")).status_code == 200
    assert httpx.get(proc.url("/health/ready")).status_code == 200
    off = free_port()
    proc2 = cello_procs.start(
        ["run", str(app_file), "--host", "127.0.0.1", "--port", str(off), "--no-health-checks"], port=off
    )
    proc2.wait_http()
    assert httpx.get(proc2.url("/health/live")).status_code == 404


def test_log_format_json_gives_json_access_lines(cello_procs):
    port = free_port()
    app_file = ROOT / "tests" / "apps" / "cli_app.py"
    proc = cello_procs.start(
        ["run", str(app_file), "--host", "127.0.0.1", "--port", str(port), "--access-log", "--log-format", "json"],
        port=port,
    )
    proc.wait_http()
    httpx.get(proc.url("/pid?probe=json-log"))

    def has_json_access_line():
        lines = [ln for ln in proc.log().splitlines() if "probe=json-log" in ln]
        assert lines, proc.log()[-2000:]
        doc = json.loads(lines[-1])
        assert doc["logger"] == "cello.access" or doc.get("name") == "cello.access", doc
        assert doc["status"] == 200

    _eventually(has_json_access_line)
