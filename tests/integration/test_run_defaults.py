"""Issue 8 item 1: `app.run()` and `cello run` have the same defaults for probes (on) and
Prometheus metrics (off until `enable_prometheus()`)."""

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import CLI_APP, cello_procs, free_port

__all__ = ["cello_procs"]  # the fixture
pytestmark = pytest.mark.timeout(60)


def start(cello_procs, how: str, *extra: str):
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), *extra]
    if how == "app.run":
        proc = cello_procs.start(args, port=port, script=CLI_APP)
    else:
        proc = cello_procs.start(["run", str(CLI_APP), *args], port=port)
    proc.wait_http()
    return proc


@pytest.mark.parametrize("how", ["app.run", "cello run"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_probes_on_and_metrics_off_by_default(cello_procs, how, workers):
    proc = start(cello_procs, how, "--workers", workers)
    for probe in ("live", "ready", "startup"):
        assert httpx.get(proc.url(f"/health/{probe}")).status_code == 200, probe
    assert httpx.get(proc.url("/metrics")).status_code == 404


@pytest.mark.parametrize("how", ["app.run", "cello run"])
def test_no_health_checks_turns_probes_off_in_both(cello_procs, how):
    proc = start(cello_procs, how, "--no-health-checks")
    assert httpx.get(proc.url("/health/live")).status_code == 404
