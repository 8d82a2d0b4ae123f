"""BackgroundTasks over a real socket: after the response, in order, pool vs loop, errors logged
and counted, drained on graceful shutdown."""

from __future__ import annotations

import time

import httpx
import pytest
from cello import App, BackgroundTasks
from cello.testing import TestClient


def wait_events(http, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        events = http.get("/events").json()
        if predicate(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


@pytest.fixture(scope="module")
def server(serve):
    return serve("di_app")


@pytest.fixture(scope="module")
def metrics_server(serve):
    return serve("metrics_di_app")


def test_tasks_run_after_response_in_order(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        http.delete("/events")
        started = time.monotonic()
        r = http.post("/tasks", params={"label": "a"})
        took = time.monotonic() - started
        assert r.json() == {"queued": 4}
        # The first task sleeps 200 ms; the response did not wait for it.
        assert took < 0.2
        assert "task:a:cello-pool" not in http.get("/events").json()
        events = wait_events(http, lambda e: "task:a-after:cello-pool" in e)
        # Sync tasks ran in the pool, the async one on the loop, in the order they were added,
        # and the failing task did not stop the last one.
        assert events == ["task:a:cello-pool", "atask:a", "task:a-after:cello-pool"]


def test_tasks_from_async_and_blocking_handlers(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        http.delete("/events")
        assert http.post("/tasks/async").json() == {"queued": 1}
        assert http.post("/tasks/blocking").json() == {"queued": 1}
        events = wait_events(http, lambda e: len(e) == 2)
        assert sorted(events) == ["atask:from-async", "task:from-pool:cello-pool"]


def test_failure_is_logged_with_traceback(serve):
    server = serve("di_app", fresh=True)
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        http.post("/tasks", params={"label": "f"})
        wait_events(http, lambda e: "task:f-after:cello-pool" in e)
    deadline = time.monotonic() + 5
    while "task failed on purpose" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log()
    assert "background task failing_task failed" in log
    assert "Traceback" in log and "ValueError: task failed on purpose" in log


def test_failure_is_counted_in_metrics(metrics_server):
    with httpx.Client(base_url=metrics_server.base_url, timeout=10) as http:
        http.post("/tasks", params={"label": "m"})
        wait_events(http, lambda e: "task:m-after:cello-pool" in e)
        text = http.get("/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith("cello_http_background_task_failures_total"))
    assert float(line.split()[-1]) >= 1


def test_pending_tasks_are_drained_on_graceful_shutdown(serve):
    server = serve("di_app", fresh=True)
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        assert http.post("/tasks/slow").json() == {"queued": 1}
    # SIGTERM while the 1 s task runs: the worker waits for it before it exits.
    code = server.stop(timeout=10)
    assert code == 0
    assert "event task:slow" in server.log()


def test_testclient_waits_for_tasks():
    app = App()
    done = []

    async def later(x):
        done.append(x)

    @app.post("/")
    def h(tasks: BackgroundTasks):
        tasks.add_task(later, 1)
        tasks.add_task(done.append, 2)
        return {}

    with TestClient(app) as client:
        client.post("/")
        assert done == [1, 2]


def test_tasks_do_not_run_when_the_handler_raises():
    app = App()
    done = []

    @app.post("/")
    def h(tasks: BackgroundTasks):
        tasks.add_task(done.append, 1)
        raise RuntimeError("no")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/").status_code == 500
    assert done == []


def test_add_task_needs_a_callable():
    with pytest.raises(TypeError):
        BackgroundTasks().add_task(42)
