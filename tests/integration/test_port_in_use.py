"""Issue 8, item 1: a second Cello on a port another Cello holds exits 3 with one message.

Both bind with SO_REUSEPORT, which the kernel grants to any socket of the same user: without the
check the second server started silently and took half of the first one's traffic.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import CLI_APP, cello_procs, distinct_pids, free_port

__all__ = ["cello_procs"]  # the fixture
pytestmark = pytest.mark.timeout(60)


def expected_line(port: int) -> str:
    return f"cello: the app failed to start: cannot bind 127.0.0.1:{port}: address already in use"


def serving_cello(cello_procs, workers: int):
    port = free_port()
    proc = cello_procs.start(
        ["run", str(CLI_APP), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)], port=port
    )
    proc.wait_log(f"workers {workers}")
    proc.wait_http()
    return proc, port


def assert_refused(code: int, out: str, port: int) -> None:
    assert code == 3, out
    reasons = [line for line in out.splitlines() if line.startswith("cello: the app failed to start:")]
    assert reasons == [expected_line(port)], out
    assert "Cello serving" not in out, out


@pytest.mark.parametrize("first_workers", [1, 2])
@pytest.mark.parametrize("second_workers", ["1", "2"])
def test_cello_run_on_a_port_another_cello_holds_exits_3(cello_procs, first_workers, second_workers):
    first, port = serving_cello(cello_procs, first_workers)
    own = distinct_pids(first, first_workers)
    code, out = cello_procs.run(
        ["run", str(CLI_APP), "--host", "127.0.0.1", "--port", str(port), "--workers", second_workers]
    )
    assert_refused(code, out, port)
    # Every request still reaches the first server's workers.
    assert distinct_pids(first, 99, attempts=40) <= own
    assert first.proc.poll() is None


def test_app_run_on_a_taken_port_exits_3(cello_procs):
    first, port = serving_cello(cello_procs, 1)
    code, out = cello_procs.run(["--host", "127.0.0.1", "--port", str(port)], script=CLI_APP)
    assert_refused(code, out, port)
    code, out = cello_procs.run(["--host", "127.0.0.1", "--port", str(port), "--workers", "2"], script=CLI_APP)
    assert_refused(code, out, port)
    assert first.proc.poll() is None


def test_reload_on_a_taken_port_exits_3(cello_procs):
    first, port = serving_cello(cello_procs, 1)
    code, out = cello_procs.run(["dev", str(CLI_APP), "--port", str(port)])
    assert_refused(code, out, port)
