"""Issue 9 item 6 (last bullet): adaptive offload decays. Three slow calls in a row move a sync
route to the thread pool; once it is fast again an inline trial brings it back. Both moves are
logged and counted in /metrics."""

from __future__ import annotations

import re

import httpx
import pytest


@pytest.fixture(scope="module")
def server(serve):
    return serve("adaptive_app", "--log-level", "info")


def metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line)
        if m and m.group(1).endswith(name) and (m.group(2) or "") == labels:
            return float(m.group(3))
    raise AssertionError(f"{name}{labels} not in /metrics:\n{text}")


def test_a_route_moved_to_the_pool_returns_inline_when_fast(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.get("/work").json() == {"inline": True}
        for _ in range(3):  # above the 1 ms threshold, three times in a row
            client.get("/work", params={"ms": 20})
        assert client.get("/work").json() == {"inline": False}, "three slow calls did not move it"
        text = client.get("/metrics").text
        assert metric(text, "offloaded_routes") == 1
        assert metric(text, "offload_switches_total", '{to="pool"}') == 1
        # Fast calls: an inline trial within 16 pooled calls finds it fast and brings it back.
        seen = [client.get("/work").json()["inline"] for _ in range(20)]
        assert seen[-1] is True, seen
        assert seen.count(False) <= 16, seen
        assert all(seen[seen.index(True) :]), f"it went back to the pool: {seen}"
        text = client.get("/metrics").text
        assert metric(text, "offloaded_routes") == 0
        assert metric(text, "offload_switches_total", '{to="inline"}') == 1
    log = server.log()
    assert "running it in the thread pool" in log
    assert "running it inline again" in log


def test_a_route_that_stays_slow_stays_in_the_pool(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(3):
            client.get("/work", params={"ms": 20})
        # Slow calls: each inline trial is slow too, so it stays pooled (trials get rarer).
        seen = [client.get("/work", params={"ms": 5}).json()["inline"] for _ in range(40)]
        assert seen.count(True) <= 2, seen
        assert seen[-1] is False
