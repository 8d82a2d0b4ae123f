"""Issue 17, item 7 (reflection "also after a reload"): under `cello dev` (the reloader starts a
fresh server process on a change) reflection lists what the new code registers: a method added
to the `.proto` alone (a `.proto` change reloads too), and a service added in the app."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import cello_procs, free_port

__all__ = ["cello_procs"]  # the fixture

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_reflection")
from google.protobuf.descriptor_pool import DescriptorPool  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)

pytestmark = pytest.mark.timeout(60)

PROTO = """syntax = "proto3";
package reload.v1;
message Ping {{ string text = 1; }}
service Echo {{
  rpc Say (Ping) returns (Ping);
{extra}}}
"""

APP = """import os
from cello import App, GrpcConfig
from cello.grpc import GrpcService, grpc_method


class Echo(GrpcService):
    @grpc_method
    async def Say(self, request):
        return {{"text": request["text"]}}

    @grpc_method
    async def Shout(self, request):
        return {{"text": request["text"].upper()}}

{more}
app = App()
app.enable_grpc(GrpcConfig(address="127.0.0.1:" + os.environ["GRPC_PORT"]))
app.add_grpc_service(Echo(), proto="echo.proto")
{add}

@app.get("/pid")
def pid(request):
    return {{"pid": os.getpid()}}
"""

EXTRA_PROTO = """syntax = "proto3";
package reload.v1;
message Count { int32 n = 1; }
service Counter {
  rpc Next (Count) returns (Count);
}
"""

COUNTER = """
class Counter(GrpcService):
    @grpc_method
    async def Next(self, request):
        return {"n": request["n"] + 1}
"""


def write(path: Path, text: str) -> None:
    """Write and make sure the mtime moves even within the filesystem's timestamp granularity."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns <= before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def listing(port: int) -> dict[str, set[str]]:
    """Service -> method names, as grpcio-reflection's client sees them (empty while down)."""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            db = ProtoReflectionDescriptorDatabase(ch)
            pool = DescriptorPool(db)
            out = {}
            for name in db.get_services():
                if name.startswith("grpc."):
                    continue
                out[name] = {m.name for m in pool.FindServiceByName(name).methods}
            return out
    except grpc.RpcError:
        return {}


def wait_listing(proc, port: int, want: dict[str, set[str]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        seen = listing(port)
        if seen == want:
            return
        time.sleep(0.1)
    pytest.fail(f"reflection lists {seen}, not {want}, after {timeout} s\n{proc.log()[-3000:]}")


def test_reflection_follows_the_reload(cello_procs, tmp_path):
    (tmp_path / "echo.proto").write_text(PROTO.format(extra=""))
    (tmp_path / "app.py").write_text(APP.format(more="", add=""))
    port, grpc_port = free_port(), free_port()
    proc = cello_procs.start(
        ["dev", "app:app", "--port", str(port)], cwd=tmp_path, port=port, env={"GRPC_PORT": str(grpc_port)}
    )
    first = proc.wait_http("/pid").json()["pid"]
    wait_listing(proc, grpc_port, {"reload.v1.Echo": {"Say"}})

    # A method added to the .proto alone: the .proto change reloads, the new rpc is listed
    # (and served: its handler was there all along).
    write(tmp_path / "echo.proto", PROTO.format(extra="  rpc Shout (Ping) returns (Ping);\n"))
    wait_listing(proc, grpc_port, {"reload.v1.Echo": {"Say", "Shout"}})
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        shout = ch.unary_unary("/reload.v1.Echo/Shout")
        # Ping{text="hi"}: field 1, length-delimited.
        assert shout(b"\x0a\x02hi", timeout=5) == b"\x0a\x02HI"

    # A service added in the app: listed after the reload, beside the first one.
    write(tmp_path / "counter.proto", EXTRA_PROTO)
    write(
        tmp_path / "app.py",
        APP.format(more=COUNTER, add='app.add_grpc_service(Counter(), proto="counter.proto")'),
    )
    wait_listing(proc, grpc_port, {"reload.v1.Echo": {"Say", "Shout"}, "reload.v1.Counter": {"Next"}})
    assert proc.wait_http("/pid").json()["pid"] != first
