"""Issue 4, item 1: /metrics in Prometheus text format over the real server: OpenTelemetry HTTP
semantic-convention metrics labelled by route template, Cello runtime metrics, no cardinality
explosion, and one scrape adding up all workers with counters that survive a worker restart."""

import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from obs_helpers import parse_metrics, scrape, value, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, distinct_pids, free_port

__all__ = ["cello_procs"]
pytestmark = pytest.mark.timeout(90)
OBS_APP = Path(__file__).resolve().parents[1] / "apps" / "obs_app.py"
DURATION = "http_server_request_duration_seconds"
OTEL_BUCKETS = ["0", "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5",
                "7.5", "10", "+Inf"]  # fmt: skip


@pytest.fixture(scope="module")
def server(serve):
    return serve("obs_app", fresh=True)


def test_request_metrics_follow_the_http_semantic_conventions(server):
    c = httpx.Client(base_url=server.base_url, timeout=5)
    for i in range(5):
        assert c.get(f"/users/{i}").status_code == 200
    assert c.post("/items", content=b"x" * 3000).status_code == 200
    assert c.get("/boom").status_code == 500
    assert c.head("/users/1").status_code == 200
    text = c.get("/metrics").text
    assert "# TYPE http_server_request_duration_seconds histogram" in text
    samples = parse_metrics(text)
    route = {"http_route": "/users/{id:int}", "http_request_method": "GET", "http_response_status_code": "200"}
    assert value(samples, DURATION + "_count", **route) == 5
    buckets = [
        ls["le"] for n, ls, _ in samples if n == DURATION + "_bucket" and all(ls.get(k) == v for k, v in route.items())
    ]
    assert buckets == OTEL_BUCKETS
    assert value(samples, DURATION + "_bucket", le="+Inf", **route) == 5
    assert value(samples, DURATION + "_sum", **route) > 0
    # The raw path never appears as a label; HEAD and 500 are their own series.
    assert "/users/3" not in text
    assert value(samples, DURATION + "_count", http_route="/users/{id:int}", http_request_method="HEAD") == 1
    assert value(samples, DURATION + "_count", http_route="/boom", http_response_status_code="500") == 1
    # Body sizes.
    items = {"http_route": "/items", "http_request_method": "POST"}
    assert value(samples, "http_server_request_body_size_bytes_sum", **items) == 3000
    assert value(samples, "http_server_response_body_size_bytes_count", **items) == 1
    assert value(samples, "http_server_response_body_size_bytes_sum", **route) > 0
    # The scrape itself is in flight neither as a request nor as a route.
    assert value(samples, "http_server_active_requests") == 0
    assert not any(ls.get("http_route") == "/metrics" for _, ls, _ in samples)


def test_active_requests_gauge(server):
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(httpx.get, server.url("/slow?s=1.5"), timeout=10) for _ in range(3)]
        wait_until(
            lambda: value(scrape(server.base_url), "http_server_active_requests", http_request_method="GET") == 3,
            what="3 active requests",
        )
        assert all(f.result().status_code == 200 for f in futures)
    assert value(scrape(server.base_url), "http_server_active_requests") == 0


def test_runtime_metrics(server):
    for _ in range(3):
        assert httpx.get(server.url("/blocking"), timeout=5).status_code == 200
    with httpx.Client(base_url=server.base_url) as c:
        c.get("/users/1")
        samples = scrape(server.base_url)
        assert value(samples, "cello_http_open_connections") >= 1
    assert value(samples, "cello_http_connections_total") >= 2
    assert value(samples, "cello_http_threadpool_size") == 64
    assert value(samples, "cello_http_threadpool_busy") == 0
    assert value(samples, "cello_workers") == 1
    assert value(samples, "cello_worker_restarts_total") == 0
    # Handler time vs time queued for the Python thread, per handled request.
    handled = value(samples, "cello_http_handler_duration_seconds_count")
    assert handled >= 4
    assert value(samples, "cello_http_queue_duration_seconds_count") == handled
    assert value(samples, "cello_http_handler_duration_seconds_sum") >= 0.15  # 3 x 50 ms blocking
    handler_sum = value(samples, "cello_http_handler_duration_seconds_sum")
    assert value(samples, "cello_http_queue_duration_seconds_sum") < handler_sum


def test_ten_thousand_unknown_paths_add_no_series(server):
    before = scrape(server.base_url)
    with httpx.Client(base_url=server.base_url, timeout=5) as c:
        for i in range(10_000):
            assert c.get(f"/nope/{i}").status_code == 404
    after = scrape(server.base_url)
    series = lambda samples: {(n, tuple(sorted(ls.items()))) for n, ls, _ in samples}  # noqa: E731
    new = series(after) - series(before)
    assert all(dict(ls).get("http_route") == "" for _, ls in new), new
    assert len(new) <= 3 * (len(OTEL_BUCKETS) + 2) + 3 * 16, len(new)  # at most one (GET, 404) series set
    assert value(after, DURATION + "_count", http_route="", http_response_status_code="404") >= 10_000


def test_namespace_and_endpoint_are_configurable(tmp_path, serve):
    app = tmp_path / "custom_app.py"
    app.write_text(
        "from cello import App\napp = App()\n"
        "app.enable_prometheus(endpoint='/internal/prom', namespace='shop', subsystem='web')\n"
        "@app.get('/')\ndef index(request):\n    return 'hi'\n"
        "if __name__ == '__main__':\n    app.run()\n"
    )
    port = free_port()
    import subprocess

    proc = subprocess.Popen([sys.executable, str(app), "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ok(base + "/"), what="server up")
        samples = scrape(base, "/internal/prom")
        assert value(samples, "shop_web_open_connections") >= 0
        assert any(n == "shop_workers" for n, _, _ in samples)
        assert any(n == "shop_web_handler_duration_seconds_count" for n, _, _ in samples)
        assert httpx.get(base + "/metrics").status_code == 404
    finally:
        proc.terminate()
        proc.wait(10)


def _ok(url):
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.TransportError:
        return False


def test_two_workers_one_scrape_totals_and_restart_keeps_counters(cello_procs, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    proc = cello_procs.start(["--port", str(port), "--workers", "2"], script=OBS_APP, port=port,
                             env={"CELLO_METRICS_DIR": str(metrics_dir)})  # fmt: skip
    proc.wait_http("/pid")
    assert len(distinct_pids(proc, 2)) == 2
    n = 200
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: httpx.get(proc.url(f"/users/{i}"), headers={"connection": "close"},
                                                  timeout=5).status_code, range(n)))  # fmt: skip
    assert codes == [200] * n
    route = {"http_route": "/users/{id:int}", "http_request_method": "GET"}

    def scrape_each_worker():
        # Fresh connections land on either worker; every one must report the total.
        totals = set()
        for _ in range(30):
            r = httpx.get(proc.url("/metrics"), headers={"connection": "close"}, timeout=5)
            totals.add(value(parse_metrics(r.text), DURATION + "_count", **route))
        return totals

    assert wait_until(lambda: scrape_each_worker() == {n}, timeout=10, what=f"every scrape = {n}")
    samples = scrape(proc.url(""))
    assert value(samples, "cello_workers") == 2
    # Kill one worker: the supervisor restarts it and the total never drops.
    victim = proc.workers()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(proc.workers()) == 2 and victim not in proc.workers(), timeout=15, what="restart")
    time.sleep(0.5)
    assert scrape_each_worker() == {n}
    for i in range(10):
        httpx.get(proc.url(f"/users/{i}"), headers={"connection": "close"}, timeout=5)
    assert wait_until(lambda: scrape_each_worker() == {n + 10}, timeout=10, what="counts after restart")
    assert value(scrape(proc.url("")), "cello_workers") == 2
