"""Issue 4, item 4: /health/live, /health/ready (Python checks, sync and async, with timeout and
cache) and /health/startup over the real server; /ready turns 503 the moment a drain starts while
in-flight requests finish."""

import signal
import threading
import time

import httpx
import pytest
from obs_helpers import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def state_file(tmp_path):
    path = tmp_path / "db-state"
    path.write_text("ok")
    return path


def test_live_startup_and_ready_with_details(serve, state_file):
    server = serve("obs_app", env={"OBS_HEALTH_FILE": str(state_file)}, fresh=True)
    live = httpx.get(server.url("/health/live"), timeout=5)
    assert live.status_code == 200 and live.json() == {"status": "UP"}
    assert live.headers["content-type"] == "application/json"
    assert httpx.get(server.url("/health/startup"), timeout=5).json()["status"] == "UP"
    ready = httpx.get(server.url("/health/ready"), timeout=5)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "UP"
    assert body["checks"]["db"]["status"] == "UP" and body["checks"]["db"]["detail"] == "state=ok"
    assert body["checks"]["cache"]["status"] == "UP"  # async check
    assert httpx.head(server.url("/health/ready"), timeout=5).status_code == 200

    state_file.write_text("down")
    ready = httpx.get(server.url("/health/ready"), timeout=5)
    assert ready.status_code == 503
    db = ready.json()["checks"]["db"]
    assert (db["status"], db["detail"]) == ("DOWN", "state=down") and db["duration_ms"] >= 0
    # Liveness never looks at dependencies.
    assert httpx.get(server.url("/health/live"), timeout=5).status_code == 200

    # A check that hangs counts as failed after timeout_secs (1 s), without blocking the server.
    state_file.write_text("hang")
    started = time.monotonic()
    ready = httpx.get(server.url("/health/ready"), timeout=10)
    assert ready.status_code == 503
    assert "timed out" in ready.json()["checks"]["db"]["detail"]
    assert time.monotonic() - started < 2.5
    assert httpx.get(server.url("/users/1"), timeout=5).status_code == 200


def test_results_are_cached(serve, state_file):
    server = serve("obs_app", env={"OBS_HEALTH_FILE": str(state_file), "OBS_CACHE_SECS": "1"}, fresh=True)
    calls = lambda: httpx.get(server.url("/checks"), timeout=5).json()["db"]  # noqa: E731
    assert httpx.get(server.url("/health/ready"), timeout=5).status_code == 200
    first = calls()
    state_file.write_text("down")
    for _ in range(5):
        assert httpx.get(server.url("/health/ready"), timeout=5).status_code == 200  # cached UP
    assert calls() == first
    time.sleep(1.1)
    assert httpx.get(server.url("/health/ready"), timeout=5).status_code == 503
    assert calls() == first + 1


def test_ready_turns_503_when_draining_while_in_flight_requests_finish(serve):
    server = serve("obs_app", env={"OBS_DRAIN_DELAY": "2"}, fresh=True)
    assert httpx.get(server.url("/health/ready"), timeout=5).status_code == 200
    result = {}

    def slow():
        result["resp"] = httpx.get(server.url("/slow?s=1.5"), timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: _active(server) >= 1, what="slow request in flight")
    server.proc.send_signal(signal.SIGTERM)
    ready = wait_until(lambda: _status(server, "/health/ready") == 503, timeout=1, interval=0.02, what="503")
    assert ready
    assert _status(server, "/health/live") == 200
    t.join(10)
    assert result["resp"].status_code == 200 and result["resp"].json() == {"slept": True}
    assert server.proc.wait(timeout=15) == 0


def _status(server, path):
    return httpx.get(server.url(path), timeout=5, headers={"connection": "close"}).status_code


def _active(server):
    from obs_helpers import scrape, value

    return value(scrape(server.base_url), "http_server_active_requests")


def test_health_checks_run_inside_the_app_without_prometheus():
    from cello import App
    from cello.testing import TestClient

    app = App()
    app.enable_health_checks()

    @app.health_check("always")
    async def always():
        return True

    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        body = client.get("/health/ready").json()
        assert body["status"] == "UP" and body["checks"]["always"]["status"] == "UP"
        assert client.get("/metrics").status_code == 404
