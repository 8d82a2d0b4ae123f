"""Issue 5 item 3: the `cello-dataplane` binary in front of a plain Python HTTP app."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, free_port, wait_for_port

pytestmark = pytest.mark.timeout(60)


def dataplane_bin() -> Path:
    explicit = os.environ.get("CELLO_DATAPLANE_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/cello/target"))
    return target / "debug" / "cello-dataplane"


@pytest.fixture(scope="module")
def upstream():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/apps/plain_upstream.py"), str(port)])
    try:
        wait_for_port("127.0.0.1", port, 10, proc)
        yield port
    finally:
        proc.kill()
        proc.wait()


def start_dataplane(tmp_path: Path, upstream_port: int, config: str = "") -> tuple[subprocess.Popen, int]:
    binary = dataplane_bin()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it with `cargo build -p cello-server --bin cello-dataplane`")
    cfg = tmp_path / "cello.yaml"
    cfg.write_text(config or "limits:\n  maxBodySize: 1000\n")
    port = free_port()
    log = open(tmp_path / f"dataplane-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [str(binary), "--upstream", f"http://127.0.0.1:{upstream_port}", "--config", str(cfg), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port("127.0.0.1", port, 10, proc)
    return proc, port


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory, upstream):
    proc, port = start_dataplane(tmp_path_factory.mktemp("dp"), upstream)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def test_requests_are_proxied_with_forwarded_headers(dataplane):
    r = httpx.get(f"{dataplane}/hello/world?x=1", headers={"connection": "keep-alive, x-private", "x-private": "1"})
    assert r.status_code == 200
    assert r.headers["x-upstream"] == "plain"
    doc = r.json()
    assert doc["method"] == "GET"
    assert doc["path"] == "/hello/world?x=1"
    assert doc["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert doc["headers"]["x-forwarded-proto"] == "http"
    # Hop-by-hop headers, and those Connection names, stop at the proxy.
    assert "x-private" not in doc["headers"]
    post = httpx.post(f"{dataplane}/items", content=b"x" * 500)
    assert post.status_code == 201
    assert post.json()["body_length"] == 500


def test_limits_are_enforced_by_the_data_plane(dataplane):
    before = httpx.get(f"{dataplane}/count").json()["seen"]
    r = httpx.post(f"{dataplane}/items", content=b"x" * 5000)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    after = httpx.get(f"{dataplane}/count").json()["seen"]
    assert after == before + 1, "the oversized request reached the app"


def test_health_and_metrics_are_answered_by_the_data_plane(dataplane):
    before = httpx.get(f"{dataplane}/count").json()["seen"]
    live = httpx.get(f"{dataplane}/health/live")
    assert live.status_code == 200
    metrics = httpx.get(f"{dataplane}/metrics")
    assert metrics.status_code == 200
    assert "http_server_request_duration_seconds_bucket" in metrics.text
    assert 'http_route="/{*path}"' in metrics.text or 'http_route="/"' in metrics.text
    after = httpx.get(f"{dataplane}/count").json()["seen"]
    assert after == before + 1, "a probe or a scrape was forwarded to the app"


def test_dead_upstream_is_a_502_problem(tmp_path):
    proc, port = start_dataplane(tmp_path, free_port())
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/x")
        assert r.status_code == 502
        assert r.headers["content-type"] == "application/problem+json"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_bad_config_is_refused_at_start(tmp_path, upstream):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("limits:\n  maxBodySize: -1\n")
    r = subprocess.run(
        [str(dataplane_bin()), "--upstream", f"http://127.0.0.1:{upstream}", "--config", str(cfg)],
        capture_output=True,
        timeout=10,
    )
    assert r.returncode != 0
    assert b"maxBodySize" in r.stderr or b"invalid" in r.stderr


# Issue 8: the sidecar runs through the server builder's lifecycle.


def _probe(port: int, path: str) -> int:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, headers={"connection": "close"}).status_code


def _wait_status(port: int, path: str, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    status = _probe(port, path)
    while status != want and time.monotonic() < deadline:
        time.sleep(0.05)
        status = _probe(port, path)
    return status


def test_startup_turns_200_and_ready_503_on_sigterm(tmp_path, upstream):
    proc, port = start_dataplane(tmp_path, upstream, "health:\n  drainDelaySecs: 2\n")
    try:
        assert _probe(port, "/health/startup") == 200
        assert _probe(port, "/health/ready") == 200
        proc.send_signal(signal.SIGTERM)
        assert _wait_status(port, "/health/ready", 503, 1) == 503
        assert _probe(port, "/health/live") == 200
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def test_ready_follows_the_upstream(tmp_path):
    app_port = free_port()
    proc, port = start_dataplane(tmp_path, app_port)
    app = None
    try:
        assert _probe(port, "/health/ready") == 503  # nothing listens on app_port yet
        app = subprocess.Popen([sys.executable, str(ROOT / "tests/apps/plain_upstream.py"), str(app_port)])
        wait_for_port("127.0.0.1", app_port, 10, app)
        assert _wait_status(port, "/health/ready", 200, 3) == 200
        app.kill()
        app.wait()
        assert _wait_status(port, "/health/ready", 503, 3) == 503
    finally:
        if app is not None:
            app.kill()
            app.wait()
        proc.kill()
        proc.wait()


def test_a_port_in_use_is_exit_code_3(tmp_path, upstream):
    proc, port = start_dataplane(tmp_path, upstream)
    try:
        cfg = tmp_path / "cello.yaml"
        r = subprocess.run(
            [
                str(dataplane_bin()),
                "--upstream",
                f"http://127.0.0.1:{upstream}",
                "--config",
                str(cfg),
                "--port",
                str(port),
            ],
            capture_output=True,
            timeout=10,
        )
        assert r.returncode == 3, r.stderr
        assert b"already in use" in r.stderr
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_csrf_and_session_sections_in_the_sidecar(tmp_path, upstream):
    """Issue 11: the data plane enforces CSRF from cello.yaml; the session binds the token."""
    secret = "0123456789abcdef0123456789abcdef-sidecar"
    proc, port = start_dataplane(
        tmp_path,
        upstream,
        f"session:\n  store: memory\n  secret: {secret}\n  cookieSecure: false\ncsrf:\n  secret: {secret}\n",
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            assert c.get("/page").status_code == 200
            token = c.cookies["csrftoken"]
            assert "session_id" in c.cookies
            assert c.post("/items", content=b"x").status_code == 403
            assert c.post("/items", content=b"x", headers={"X-CSRF-Token": token}).status_code == 201
    finally:
        proc.kill()
        proc.wait()
