"""HTTP/3 over QUIC (issue 12, item 3) with a real HTTP/3 client (aioquic): UDP on the TLS
port number with the same certificate, `Alt-Svc` on HTTP/1.1 and HTTP/2, GET, POST bodies,
streamed responses, problem+json errors, and a drain that closes QUIC with H3_NO_ERROR."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time

import httpx
import pytest

trustme = pytest.importorskip("trustme")
pytest.importorskip("aioquic")
from conftest import ROOT, free_port, wait_for_port  # noqa: E402
from h3client import h3_connect  # noqa: E402

H3_NO_ERROR = 0x100


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("h3pki")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(d / "c.pem"))
    cert.private_key_pem.write_to_path(str(d / "k.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return {"ca": ca, "cert": str(d / "c.pem"), "key": str(d / "k.pem"), "cafile": str(d / "ca.pem")}


def h3_env(pki, **h3) -> dict:
    return {"TLS_APP_CERT": pki["cert"], "TLS_APP_KEY": pki["key"], "TLS_APP_H3": json.dumps(h3)}


@pytest.fixture(scope="module")
def server(serve, pki):
    return serve("tls_app", env=h3_env(pki))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))  # aioquic is pure Python: slow on a busy CI box


def test_alt_svc_is_advertised_on_http1_and_http2(server, pki):
    ctx = ssl.create_default_context()
    pki["ca"].configure_trust(ctx)
    for http2 in (False, True):
        with httpx.Client(verify=ctx, http2=http2) as c:
            r = c.get(f"https://127.0.0.1:{server.port}/")
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert r.headers["alt-svc"] == f'h3=":{server.port}"; ma=86400'


def test_get_post_stream_and_errors_over_http3(server, pki):
    async def go():
        async with h3_connect("127.0.0.1", server.port, pki["cafile"]) as proto:
            r = await proto.request("GET", "/")
            assert r.status == 200, r
            body = json.loads(r.body)
            assert body["http_version"] == "3"
            assert body["scheme"] == "https"

            payload = bytes(range(256)) * 2000
            r = await proto.request("POST", "/echo", body=payload, headers={"content-type": "application/octet-stream"})
            assert r.status == 200
            assert json.loads(r.body) == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}

            r = await proto.request("GET", "/big/2")
            assert r.status == 200
            assert len(r.body) == 2 * 1024 * 1024
            assert r.body[:256] == bytes(range(256))

            r = await proto.request("GET", "/fail")
            assert r.status == 500
            assert r.headers["content-type"].startswith("application/problem+json")
            r = await proto.request("GET", "/nope")
            assert r.status == 404
            assert json.loads(r.body)["status"] == 404

            # Several requests at once on one connection.
            results = await asyncio.gather(*(proto.request("GET", "/slow") for _ in range(5)))
            assert [x.status for x in results] == [200] * 5

    run(go())


def test_body_limit_is_413_problem_over_http3(serve, pki, tmp_path):
    cfg = tmp_path / "cello.yaml"
    cfg.write_text(json.dumps({"limits": {"maxBodySize": 1000}}))
    server = serve("tls_app", env={**h3_env(pki), "CELLO_CONFIG": str(cfg)})

    async def go():
        async with h3_connect("127.0.0.1", server.port, pki["cafile"]) as proto:
            r = await proto.request("POST", "/echo", body=b"x" * 5000)
            assert r.status == 413
            assert r.headers["content-type"].startswith("application/problem+json")
            r = await proto.request("POST", "/echo", body=b"x" * 10)
            assert r.status == 200

    run(go())


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_a_large_upload_streams_over_http3_without_being_held_in_memory(serve, pki, tmp_path):
    """Item 6 over HTTP/3: the body reaches `request.stream()` as it arrives (limit, budget and
    spooling as over HTTP/1.1 and HTTP/2); the server's peak RSS does not grow by the body."""
    cfg = tmp_path / "cello.yaml"
    cfg.write_text(json.dumps({"limits": {"maxBodySize": 64 * 1024 * 1024}}))
    server = serve("tls_app", env={**h3_env(pki), "CELLO_CONFIG": str(cfg)}, fresh=True)
    payload = os.urandom(1 << 20) * 24  # 24 MiB

    async def go():
        async with h3_connect("127.0.0.1", server.port, pki["cafile"]) as proto:
            r = await proto.request("POST", "/upload", body=b"warm" * 4096)
            assert r.status == 200, r
            before = peak_rss_kib(server.pid)
            headers = {"content-type": "application/octet-stream"}
            r = await proto.request("POST", "/upload", body=payload, headers=headers)
            assert r.status == 200, r
            assert json.loads(r.body) == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
            return before, peak_rss_kib(server.pid)

    before, after = run(go())
    grown = (after - before) / 1024
    assert grown < 12, f"peak RSS grew by {grown:.1f} MiB for a 24 MiB body"


def test_the_tls_example_serves_http1_http2_and_http3(pki):
    """examples/tls/app.py, run as its docstring says, with TLS_HTTP3=1."""
    port = free_port()
    env = {**os.environ, "TLS_CERT": pki["cert"], "TLS_KEY": pki["key"], "TLS_HTTP3": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "tls" / "app.py"), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, 60, proc)
        ctx = ssl.create_default_context()
        pki["ca"].configure_trust(ctx)
        for http2 in (False, True):
            with httpx.Client(verify=ctx, http2=http2) as c:
                r = c.get(f"https://127.0.0.1:{port}/")
            assert r.json()["http_version"] == ("2" if http2 else "1.1")
            assert r.headers["alt-svc"] == f'h3=":{port}"; ma=86400'

        async def go():
            async with h3_connect("127.0.0.1", port, pki["cafile"]) as proto:
                return await proto.request("GET", "/")

        r = run(go())
        assert r.status == 200 and json.loads(r.body)["http_version"] == "3"
    finally:
        proc.terminate()
        proc.wait(20)


def test_drain_closes_quic_connections_cleanly(serve, pki):
    server = serve("tls_app", env=h3_env(pki), fresh=True)

    async def go():
        async with h3_connect("127.0.0.1", server.port, pki["cafile"]) as proto:
            assert (await proto.request("GET", "/")).status == 200
            slow = asyncio.ensure_future(proto.request("GET", "/slow"))
            await asyncio.sleep(0.2)
            server.proc.send_signal(signal.SIGTERM)
            r = await slow  # in flight when the drain began: it still completes
            assert r.status == 200
            await asyncio.wait_for(proto.closed_event.wait(), 10)
            assert proto.terminated.error_code == H3_NO_ERROR, proto.terminated

    run(go())
    deadline = time.monotonic() + 10
    while server.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.alive()
    assert server.proc.returncode == 0, server.log()[-2000:]


def test_http3_without_tls_is_refused():
    from cello import App, ConfigError, FeatureNotAvailable, Http3Config

    app = App()
    with pytest.raises(FeatureNotAvailable):
        app.enable_http3(Http3Config(enable_0rtt=True))
    app.enable_http3(Http3Config(max_idle_timeout=10))
    from cello._cello import validate_config

    with pytest.raises(ConfigError, match="tls"):
        validate_config(json.dumps(app.server_config()))
