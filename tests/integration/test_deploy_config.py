"""Deployment settings the operator and proxies pass to `cello run`: `CELLO_CONFIG` (the
`cello.yaml` rendered from `CellApp.spec.server`) and `--root-path`."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import CLI_APP, ROOT, cello_procs, free_port

__all__ = ["cello_procs"]  # the fixture
pytestmark = pytest.mark.timeout(60)
URL_APP = ROOT / "tests" / "apps" / "url_app.py"


def test_cello_yaml_limits_apply_to_the_embedded_server(cello_procs, tmp_path):
    cfg = tmp_path / "cello.yaml"
    cfg.write_text("limits:\n  maxBodySize: 100\nprometheus:\n  enabled: true\n")
    port = free_port()
    proc = cello_procs.start(
        ["run", str(URL_APP), "--host", "127.0.0.1", "--port", str(port)], port=port, env={"CELLO_CONFIG": str(cfg)}
    )
    proc.wait_http("/where")
    assert httpx.post(proc.url("/echo"), content=b"x" * 50).status_code == 200
    too_big = httpx.post(proc.url("/echo"), content=b"x" * 500)
    assert too_big.status_code == 413
    assert too_big.headers["content-type"] == "application/problem+json"
    assert httpx.get(proc.url("/metrics")).status_code == 200  # turned on by the file


def test_invalid_cello_yaml_exits_3_naming_the_field(cello_procs, tmp_path):
    cfg = tmp_path / "cello.yaml"
    cfg.write_text("timeouts:\n  idle: 0\n")
    code, out = cello_procs.run(
        ["run", str(CLI_APP), "--host", "127.0.0.1", "--port", str(free_port())], env={"CELLO_CONFIG": str(cfg)}
    )
    assert code == 3, out
    assert "timeouts.idle" in out


def test_root_path_routes_with_or_without_the_prefix_and_keeps_it_in_urls(cello_procs):
    port = free_port()
    proc = cello_procs.start(
        ["run", str(URL_APP), "--host", "127.0.0.1", "--port", str(port), "--root-path", "/api"], port=port
    )
    proc.wait_http("/where")
    # A proxy that strips the prefix forwards /where; one that does not forwards /api/where.
    stripped = httpx.get(proc.url("/where")).json()
    kept = httpx.get(proc.url("/api/where")).json()
    assert stripped["url"] == f"http://127.0.0.1:{port}/api/where"
    assert kept["url"] == f"http://127.0.0.1:{port}/api/where"
    assert stripped["root_path"] == kept["root_path"] == "/api"
    assert httpx.get(proc.url("/apix/where")).status_code == 404


def test_cello_yaml_session_and_csrf_sections_apply(cello_procs, tmp_path):
    """Issue 11: `session` and `csrf` from cello.yaml (as rendered from CellApp.spec.server)."""
    secret = "0123456789abcdef0123456789abcdef-yaml"
    cfg = tmp_path / "cello.yaml"
    cfg.write_text(
        f"session:\n  store: memory\n  secret: {secret}\n  cookieSecure: false\n"
        f"csrf:\n  secret: {secret}\n  headerName: X-Token\n"
    )
    port = free_port()
    proc = cello_procs.start(
        ["run", str(URL_APP), "--host", "127.0.0.1", "--port", str(port)], port=port, env={"CELLO_CONFIG": str(cfg)}
    )
    proc.wait_http("/where")
    with httpx.Client() as c:
        first = c.get(proc.url("/where"))
        lines = first.headers.get_list("set-cookie")
        assert any(line.startswith("csrftoken=") for line in lines), lines
        assert any(line.startswith("session_id=") and "Secure" not in line for line in lines), lines
        refused = c.post(proc.url("/echo"), content=b"x")
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        ok = c.post(proc.url("/echo"), content=b"x", headers={"X-Token": c.cookies["csrftoken"]})
        assert ok.status_code == 200
