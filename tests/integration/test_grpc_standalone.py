"""Issue 17, items 7-8: the standalone `GrpcServer` (no App) in a process of its own
(tests/apps/grpc_standalone.py, driven over stdin) — it serves after `start()`, `stop(grace)`
frees the port at once, lets a call in flight finish within the grace and cancels it after,
and it starts again on the same port; and HTTP/2 keep-alive from `GrpcConfig.keepalive_secs`,
watched with a raw `h2` client: PINGs at the interval, a peer that stops answering is dropped."""

from __future__ import annotations

import importlib
import queue
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import APPS_DIR

grpc = pytest.importorskip("grpc")
h2_connection = pytest.importorskip("h2.connection")
import h2.config  # noqa: E402
import h2.events  # noqa: E402
from grpc_tools import protoc  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    out = tmp_path_factory.mktemp("grpc-stubs")
    proto_dir = APPS_DIR / "protos"
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main([*args, str(proto_dir / "greeter.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("greeter_pb2"), importlib.import_module("greeter_pb2_grpc")
    finally:
        sys.path.remove(str(out))


class Standalone:
    """tests/apps/grpc_standalone.py: its stdout lines in a queue, commands on its stdin."""

    def __init__(self, **env: str) -> None:
        import os

        self.proc = subprocess.Popen(
            [sys.executable, str(APPS_DIR / "grpc_standalone.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.expect("port ").split()[1])

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        pytest.fail(f"no {prefix!r} line within {timeout} s; output:\n" + "\n".join(self.seen[-50:]))

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def standalone():
    made: list[Standalone] = []

    def make(**env: str) -> Standalone:
        made.append(Standalone(**env))
        return made[-1]

    yield make
    for s in made:
        s.close()


def port_is_free(port: int) -> bool:
    """Whether nothing listens on the port: with SO_REUSEADDR (and no SO_REUSEPORT) a bind fails
    only while a listening socket holds it, not for the connections it accepted."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_start_serve_graceful_stop_and_restart(pb, standalone):
    server = standalone()
    target = f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(target) as ch:
        stub = pb[1].GreeterStub(ch)
        assert stub.SayHello(pb[0].HelloRequest(name="one"), timeout=5).message == "Hello, one!"
        assert not port_is_free(server.port)
        # A call in flight when stop() begins finishes within the grace.
        inflight = stub.Slow.future(pb[0].SlowRequest(seconds=1.0, tag="inflight"), timeout=20)
        server.expect("started inflight")
        server.send("stop 10")
        # The listener closes at once: the port is free while the call still runs.
        deadline = time.monotonic() + 5
        while not port_is_free(server.port):
            assert time.monotonic() < deadline, "the port is still bound after stop() began"
            time.sleep(0.02)
        assert not inflight.done()
        assert inflight.result().message == "done inflight"
        stopped = float(server.expect("stopped ").split()[1])
        # stop() waited for the call, not for the whole grace.
        assert stopped < 5
    # Stopped: new calls fail.
    with grpc.insecure_channel(target) as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb[1].GreeterStub(ch).SayHello(pb[0].HelloRequest(name="two"), timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # And it starts again on the same port.
    server.send("start")
    assert int(server.expect("port ").split()[1]) == server.port
    with grpc.insecure_channel(target) as ch:
        assert pb[1].GreeterStub(ch).SayHello(pb[0].HelloRequest(name="three"), timeout=5).message == "Hello, three!"


def test_stop_cancels_calls_still_running_after_the_grace(pb, standalone):
    server = standalone()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        slow = pb[1].GreeterStub(ch).Slow.future(pb[0].SlowRequest(seconds=30, tag="long"), timeout=30)
        server.expect("started long")
        started = time.monotonic()
        server.send("stop 0.5")
        server.expect("cancelled long")
        stopped = float(server.expect("stopped ").split()[1])
        assert 0.4 < stopped < 3
        assert time.monotonic() - started < 5
        with pytest.raises(grpc.RpcError):
            slow.result(timeout=5)


# ---- keep-alive ---------------------------------------------------------------------------------


def test_keepalive_pings_at_the_interval_and_drops_a_silent_peer(standalone):
    server = standalone(GRPC_KEEPALIVE="1")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    conn = h2_connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    # Answer the PINGs (h2 queues the ACK): the server keeps pinging, about once a second, and
    # the connection outlives several keep-alive timeouts.
    pings: list[float] = []
    deadline = time.monotonic() + 15
    while len(pings) < 3:
        assert time.monotonic() < deadline, f"PINGs seen: {len(pings)}"
        data = sock.recv(65536)
        assert data, "the server closed a connection that answered its PINGs"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.PingReceived):
                pings.append(time.monotonic())
        sock.sendall(conn.data_to_send())
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert all(0.7 < g < 2.5 for g in gaps), gaps
    # Stop answering: the connection is dropped within about one interval and one timeout.
    silent = time.monotonic()
    closed = False
    sock.settimeout(0.5)
    while time.monotonic() - silent < 10:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not data:
            closed = True
            break
        conn.receive_data(data)  # a PING, then perhaps a GOAWAY: never answered
    elapsed = time.monotonic() - silent
    sock.close()
    assert closed, "the connection stayed open without PING answers"
    assert elapsed < 4, f"dropped after {elapsed:.1f} s"
