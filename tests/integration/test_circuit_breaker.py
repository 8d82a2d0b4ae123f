"""Issue 10 item 8: `enable_circuit_breaker(failure_threshold=3, reset_timeout=1,
half_open_target=2)` in tests/apps/breaker_app.py, over real sockets."""

from __future__ import annotations

import time

import httpx
import pytest
from rawhttp import assert_problem


@pytest.fixture(scope="module")
def server(serve):
    return serve("breaker_app")


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def calls(client, name):
    return client.get("/calls").json().get(name, 0)


def metric(client, line_start: str) -> float | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_until_half_open(client, path):
    deadline = time.monotonic() + 10
    while True:
        r = client.get(path)
        if r.status_code != 503 or "retry-after" not in r.headers:
            return r
        assert time.monotonic() < deadline, "the breaker never let a trial through"
        time.sleep(0.05)


def test_open_half_open_closed_per_route_template(client):
    client.post("/fail/1")
    # three failures on different raw paths of one template open its breaker
    for i in range(3):
        assert client.get(f"/flaky/{i}").status_code == 502
    before = calls(client, "flaky")
    r = client.get("/flaky/99")
    body = assert_problem(r, 503)
    assert int(r.headers["retry-after"]) >= 1 and "open" in body["detail"]
    assert calls(client, "flaky") == before  # Python was not called
    # other routes are unaffected
    assert client.get("/ok").status_code == 200
    assert metric(client, 'cello_circuit_breaker_state{route="/flaky/{id:int}",state="open"}') == 1
    assert metric(client, 'cello_circuit_breaker_rejected_total{route="/flaky/{id:int}"}') >= 1

    # half-open: a failing trial opens it again
    trial = wait_until_half_open(client, "/flaky/1")
    assert trial.status_code == 502
    assert client.get("/flaky/1").status_code == 503
    # recovered: two successful trials close it
    client.post("/fail/0")
    assert wait_until_half_open(client, "/flaky/1").status_code == 200
    assert client.get("/flaky/2").status_code == 200
    for i in range(5):
        assert client.get(f"/flaky/{i}").status_code == 200
    assert metric(client, 'cello_circuit_breaker_state{route="/flaky/{id:int}",state="closed"}') == 1
    assert metric(client, 'cello_circuit_breaker_transitions_total{route="/flaky/{id:int}",to="open"}') == 2
    assert metric(client, 'cello_circuit_breaker_transitions_total{route="/flaky/{id:int}",to="half_open"}') == 2
    assert metric(client, 'cello_circuit_breaker_transitions_total{route="/flaky/{id:int}",to="closed"}') == 1


def test_exceptions_count_as_failures(client):
    for _ in range(3):
        assert client.get("/boom").status_code == 500
    before = calls(client, "boom")
    assert_problem(client.get("/boom"), 503)
    assert calls(client, "boom") == before


def test_unknown_paths_and_successes_do_not_trip(client):
    for _ in range(10):
        assert client.get("/nowhere").status_code == 404
        assert client.get("/ok").status_code == 200


def test_bad_arguments_are_refused():
    from cello import App, ConfigError

    app = App()
    with pytest.raises((ValueError, ConfigError)):
        app.enable_circuit_breaker(failure_threshold=0)
    with pytest.raises((ValueError, ConfigError)):
        app.enable_circuit_breaker(reset_timeout=0)
    with pytest.raises((ValueError, ConfigError)):
        app.enable_circuit_breaker(failure_codes=[700])
    with pytest.raises(TypeError):
        app.enable_circuit_breaker(failure_threshold="5")
