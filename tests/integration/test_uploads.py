"""Issue 12 item 6 (streaming request bodies): `async for chunk in request.stream()` over a
body the server never holds in memory (spooled to a temporary file above 1 MiB, removed after
the request), with no route flag."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

pytestmark = pytest.mark.timeout(300)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(serve):
    return serve("upload_app")


def chunks(total: int, size: int = MiB):
    block = bytes(range(256)) * (size // 256)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


def digest(total: int) -> str:
    h = hashlib.sha256()
    for c in chunks(total):
        h.update(c)
    return h.hexdigest()


def test_small_bodies_stream_from_memory(server):
    r = httpx.post(server.url("/count"), content=b"hello", timeout=30)
    assert r.json() == {"bytes": 5, "sha256": hashlib.sha256(b"hello").hexdigest(), "spooled": False}


def test_a_1gb_body_streams_with_flat_rss_and_its_spool_file_is_removed(server):
    total = 1024 * MiB
    before = server.rss()
    peak = [before]

    def body():
        for i, c in enumerate(chunks(total)):
            if i % 64 == 0:
                peak[0] = max(peak[0], server.rss())
            yield c

    r = httpx.post(server.url("/count"), content=body(), timeout=240)
    peak[0] = max(peak[0], server.rss())
    assert r.status_code == 200, r.text
    assert r.json() == {"bytes": total, "sha256": digest(total), "spooled": True}
    assert peak[0] - before < 64 * MiB, f"RSS grew by {(peak[0] - before) / MiB:.0f} MiB"
    deadline = time.monotonic() + 10
    while True:
        files = httpx.get(server.url("/spool-files"), timeout=5).json()
        if files["seen"] and not files["existing"]:
            break
        assert time.monotonic() < deadline, f"spool files left behind: {files}"
        time.sleep(0.05)


def test_body_still_works_for_a_spooled_body(server):
    total = 3 * MiB + 17
    r = httpx.post(server.url("/body"), content=b"".join(chunks(total)), timeout=60)
    assert r.json() == {"bytes": total, "sha256": digest(total)}


def test_a_chunked_body_over_the_limit_is_413_problem_json(serve):
    srv = serve("upload_app", env={"UPLOAD_MAX": str(2 * MiB)})
    r = httpx.post(srv.url("/count"), content=chunks(5 * MiB), timeout=60)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
