"""Issue 3, item 3: `--workers N|auto` and `app.run(workers=N)` fork N serving processes that share
the port (SO_REUSEPORT, one socket per worker slot, bound by the supervisor); the supervisor
itself never serves."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import CLI_APP, cello_procs, distinct_pids, free_port, listening_inodes, socket_inodes

__all__ = ["cello_procs"]  # the fixture
pytestmark = pytest.mark.timeout(30)


def test_cli_workers_two_distinct_pids_and_a_non_serving_supervisor(cello_procs):
    port = free_port()
    proc = cello_procs.start(["run", str(CLI_APP), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                             port=port)  # fmt: skip
    proc.wait_http()
    log = proc.wait_log("workers 2")
    assert f"http://127.0.0.1:{port}" in log and "env production" in log, log

    pids = distinct_pids(proc, 2)
    workers = proc.workers()
    assert len(pids) == 2, pids
    assert pids == set(workers), (pids, workers)
    assert proc.pid not in pids
    # Forking is safe: the supervisor has one thread (no tokio runtime, no pool) when it forks.
    with open(f"/proc/{proc.pid}/status") as f:
        assert "Threads:\t1\n" in f.read()
    # The supervisor owns one listening socket per worker slot (so a replacement takes over
    # its predecessor's accept queue) but never accepts: each worker holds exactly its own.
    held = [socket_inodes(w) & listening_inodes() for w in workers]
    assert all(len(h) == 1 for h in held), held
    assert held[0] != held[1]
    assert socket_inodes(proc.pid) & listening_inodes() == held[0] | held[1]


def test_app_run_workers_from_a_script(cello_procs):
    port = free_port()
    proc = cello_procs.start(["--port", str(port), "--workers", "2"], script=CLI_APP, port=port)
    proc.wait_http()
    assert len(distinct_pids(proc, 2)) == 2
    assert len(proc.workers()) == 2


def test_port_zero_gives_all_workers_the_same_concrete_port(cello_procs):
    proc = cello_procs.start(["run", str(CLI_APP), "--host", "127.0.0.1", "--port", "0", "--workers", "2"])
    log = proc.wait_log("workers 2")
    proc.port = int(log.split("http://127.0.0.1:")[1].split()[0])
    assert proc.port != 0
    assert len(distinct_pids(proc, 2)) == 2


@pytest.mark.parametrize(("cpu_max", "expected"), [("150000 100000", 2), ("100000 100000", 1)])
def test_workers_auto_follows_the_cgroup_quota(cello_procs, tmp_path, cpu_max, expected):
    import os

    if len(os.sched_getaffinity(0)) < expected:
        pytest.skip("needs more CPUs than this machine has")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text(cpu_max + "\n")
    port = free_port()
    proc = cello_procs.start(["run", str(CLI_APP), "--host", "127.0.0.1", "--port", str(port), "--workers", "auto"],
                             port=port, env={"CELLO_CGROUP_ROOT": str(cgroup)})  # fmt: skip
    proc.wait_http()
    proc.wait_log(f"workers {expected}")
    assert len(distinct_pids(proc, expected)) == expected
    if expected == 1:
        assert proc.workers() == []  # one worker: served in-process, no supervisor
