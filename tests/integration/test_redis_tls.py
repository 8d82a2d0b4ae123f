"""Issue 14 item 6: ``RedisConfig(tls=True)`` / ``rediss://`` against a real TLS Redis, started
here from Debian's ``redis-server`` (built with TLS) on a free port in a temporary folder, with
certificates made by ``trustme``; stopped at the end of the module.

The client trusts the system roots, or instead the PEM file named by ``SSL_CERT_FILE`` (how a
private CA is trusted by a rustls client), so the tests point that variable at the test CA, or
at another CA to prove a server certificate from an unknown issuer is refused."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import trustme
from cello.config import RedisConfig
from cello.database import Redis, RedisError
from conftest import free_port, wait_for_port
from db_helpers import Loop, missing


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """(port, CA file, file of an unrelated CA) of a TLS-only redis-server."""
    server = shutil.which("redis-server")
    if not server:
        missing("redis-server is not installed")
    d = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    trustme.CA().cert_pem.write_to_path(str(d / "other-ca.pem"))
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(d / "cert.pem"),
            "--tls-key-file",
            str(d / "key.pem"),
            "--tls-ca-cert-file",
            str(d / "ca.pem"),
            "--tls-auth-clients",
            "no",
            "--dir",
            str(d),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(d / "log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        try:
            wait_for_port("127.0.0.1", port, 15, proc)
        except RuntimeError as e:
            log = (d / "log").read_text() if (d / "log").exists() else ""
            raise RuntimeError(f"TLS redis-server did not start: {e}\n{log[-2000:]}") from e
        yield port, str(d / "ca.pem"), str(d / "other-ca.pem")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tls_flag_round_trips_with_the_ca(tls_redis, loop, monkeypatch):
    port, ca, _ = tls_redis
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    r = Redis(RedisConfig(url=f"redis://127.0.0.1:{port}", tls=True, key_prefix="data2tls:", pool_size=1))
    loop.run(r.set("k", "over tls", ttl=60))
    assert loop.run(r.get("k")) == "over tls"
    assert loop.run(r.delete("k")) == 1
    loop.run(r.close())


def test_rediss_url_round_trips_with_the_ca(tls_redis, loop, monkeypatch):
    port, ca, _ = tls_redis
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    r = Redis(RedisConfig(url=f"rediss://127.0.0.1:{port}/2", pool_size=1))
    loop.run(r.set("data2tls:url", "1"))
    assert loop.run(r.incr("data2tls:url")) == 2
    loop.run(r.delete("data2tls:url"))
    loop.run(r.close())


def test_plain_text_to_the_tls_port_fails(tls_redis, loop):
    """Without TLS the server drops the connection: an error, not a hang."""
    port, _, _ = tls_redis
    r = Redis(RedisConfig(url=f"redis://127.0.0.1:{port}", connection_timeout_secs=2, pool_size=1))
    started = time.monotonic()
    with pytest.raises(RedisError):
        loop.run(r.get("x"))
    assert time.monotonic() - started < 8


def test_wrong_ca_is_refused_with_a_clear_error(tls_redis, loop, monkeypatch):
    port, _, other = tls_redis
    monkeypatch.setenv("SSL_CERT_FILE", other)
    r = Redis(RedisConfig(url=f"rediss://127.0.0.1:{port}", connection_timeout_secs=3, pool_size=1))
    started = time.monotonic()
    with pytest.raises(RedisError) as err:
        loop.run(r.get("x"))
    assert time.monotonic() - started < 8
    msg = str(err.value).lower()
    assert "certificate" in msg and ("unknownissuer" in msg or "unknown issuer" in msg), msg
