"""HTTP/2 over TLS (ALPN `h2`) and cleartext (h2c prior knowledge) with `Http2Config` honoured
(issue 12, item 2), checked frame by frame with the `h2` library: the SETTINGS the server
advertises, keep-alive PINGs, refused streams beyond `max_concurrent_streams`, and a large
streamed body that never outruns the client's flow-control window."""

from __future__ import annotations

import collections
import json
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

trustme = pytest.importorskip("trustme")

H2 = {
    "max_concurrent_streams": 3,
    "initial_window_size": 131072,
    "max_frame_size": 32768,
    "keep_alive_interval": 0.3,
    "keep_alive_timeout": 5,
}


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module", params=["tls", "h2c"])
def server(request, serve, ca, tmp_path_factory):
    env = {"TLS_APP_H2": json.dumps(H2)}
    if request.param == "h2c":
        return serve("tls_app", env=env), None
    d = tmp_path_factory.mktemp("h2pki")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(d / "c.pem"))
    cert.private_key_pem.write_to_path(str(d / "k.pem"))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["h2"])
    return serve("tls_app", "--ssl-certfile", str(d / "c.pem"), "--ssl-keyfile", str(d / "k.pem"), env=env), ctx


class Client:
    """One HTTP/2 connection driven by hand."""

    def __init__(self, server, ctx: ssl.SSLContext | None):
        sock = socket.create_connection((server.host, server.port), timeout=5)
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.scheme = "https" if ctx else "http"
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.events: list = []

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def pump(self, timeout: float) -> list:
        """Read for up to `timeout` seconds (or until something arrives); returns new events."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("server closed the connection")
        events = self.conn.receive_data(data)
        self.flush()
        self.events.extend(events)
        return events

    def until(self, pred, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if pred(ev):
                return ev
        while time.monotonic() < deadline:
            for ev in self.pump(max(0.01, deadline - time.monotonic())):
                if pred(ev):
                    return ev
        raise AssertionError(f"no matching event in {timeout} s; got {[type(e).__name__ for e in self.events]}")

    def get(self, path: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [(":method", "GET"), (":path", path), (":scheme", self.scheme), (":authority", "localhost")],
            end_stream=True,
        )
        self.flush()
        return sid

    def close(self) -> None:
        self.sock.close()


def test_settings_follow_http2config(server):
    c = Client(*server)
    try:
        ev = c.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        got = {code: s.new_value for code, s in ev.changed_settings.items()}
        codes = h2.settings.SettingCodes
        assert got[codes.MAX_CONCURRENT_STREAMS] == H2["max_concurrent_streams"]
        assert got[codes.INITIAL_WINDOW_SIZE] == H2["initial_window_size"]
        assert got[codes.MAX_FRAME_SIZE] == H2["max_frame_size"]
        sid = c.get("/")
        resp = c.until(lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid)
        assert dict(resp.headers)[b":status"] == b"200"
    finally:
        c.close()


def test_keep_alive_pings_are_sent(server):
    c = Client(*server)
    try:
        c.until(lambda e: isinstance(e, h2.events.PingReceived), timeout=5)
    finally:
        c.close()


def test_streams_beyond_max_concurrent_streams_are_refused(server):
    c = Client(*server)
    try:
        c.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        # Make our h2 client ignore the server's limit, as a misbehaving one would.
        c.conn.remote_settings._settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = collections.deque([100])
        sids = [c.get("/slow") for _ in range(H2["max_concurrent_streams"] + 2)]
        reset = c.until(lambda e: isinstance(e, h2.events.StreamReset), timeout=5)
        assert reset.stream_id in sids[H2["max_concurrent_streams"] :]
        assert reset.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        for sid in sids[: H2["max_concurrent_streams"]]:
            c.until(lambda e, sid=sid: isinstance(e, h2.events.StreamEnded) and e.stream_id == sid, timeout=10)
    finally:
        c.close()


def test_large_streamed_body_respects_the_client_window(server):
    c = Client(*server)
    try:
        sid = c.get("/big/8")
        window = 65535  # the client's default stream and connection window
        received = 0
        # Without WINDOW_UPDATEs the server must stop at the window.
        quiet_deadline = time.monotonic() + 1.0
        while time.monotonic() < quiet_deadline:
            for ev in c.pump(0.2):
                if isinstance(ev, h2.events.DataReceived):
                    received += len(ev.data)
                    quiet_deadline = time.monotonic() + 0.5
        assert 0 < received <= window, f"server sent {received} bytes into a {window}-byte window"
        # Acknowledge everything from now on: the whole body arrives.
        c.conn.acknowledge_received_data(received, sid)
        c.flush()
        ended = False
        deadline = time.monotonic() + 30
        while not ended and time.monotonic() < deadline:
            for ev in c.pump(1.0):
                if isinstance(ev, h2.events.DataReceived):
                    received += len(ev.data)
                    c.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    c.flush()
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
        assert ended
        assert received == 8 * 1024 * 1024
    finally:
        c.close()
