"""Issue 3, item 5: the `cello` command (console script and `python -m cello`): `run`, `dev` and
`routes`, the APP forms, flags with CELLO_* variables, $PORT, and the start-up banner."""

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps"))
from cli_harness import APPS, CLI_APP, cello_procs, free_port

__all__ = ["cello_procs"]  # the fixture
pytestmark = pytest.mark.timeout(30)
PROJECT = APPS / "cli_project"


def table(out: str) -> list[list[str]]:
    return [line.split(None, 3) for line in out.strip().splitlines()]


# ---- cello routes and APP forms -----------------------------------------------------------------


def test_routes_prints_method_path_handler_guards(cello_procs):
    code, out = cello_procs.run(["routes", str(CLI_APP)])
    assert code == 0, out
    rows = table(out)
    assert rows[0] == ["METHOD", "PATH", "HANDLER", "GUARDS"]
    assert ["GET", "/pid", "cli_app.pid", "-"] in rows
    assert ["POST", "/items/{item_id}", "cli_app.update_item", "cli_app.admin_only"] in rows


@pytest.mark.parametrize(
    "app_arg",
    [
        ["webapp.main:application"],  # module:attr, importable from the current directory
        ["webapp/main.py:application"],  # file path inside a package
        [],  # [tool.cello] app in ./pyproject.toml
    ],
)
def test_app_forms(cello_procs, app_arg):
    code, out = cello_procs.run(["routes", *app_arg], cwd=PROJECT)
    assert code == 0, out
    rows = table(out)
    assert ["GET", "/hello", "webapp.main.hello", "-"] in rows
    assert ["DELETE", "/admin/users/{user_id}", "webapp.main.delete_user", "Authenticated(user_key='user')"] in rows


def test_module_without_attr_means_app_and_a_lone_file_works(cello_procs):
    code, out = cello_procs.run(["routes", "simple"], cwd=PROJECT)
    assert code == 0 and "/simple" in out, out
    code, out = cello_procs.run(["routes", str(PROJECT / "simple.py")], cwd=APPS.parent)
    assert code == 0 and "/simple" in out, out


def test_bad_app_targets(cello_procs, tmp_path):
    code, out = cello_procs.run(["routes", "simple:not_an_app"], cwd=PROJECT)
    assert code == 3 and "simple:not_an_app is not a cello App (got int)" in out, out
    code, out = cello_procs.run(["routes", "simple:nope"], cwd=PROJECT)
    assert code == 3 and "has no attribute 'nope'" in out, out
    code, out = cello_procs.run(["run"], cwd=tmp_path)  # no APP, no pyproject.toml
    assert code == 2 and "no APP given" in out, out


# ---- serving ------------------------------------------------------------------------------------


def test_console_script_runs_the_pyproject_app_on_PORT(cello_procs):
    port = free_port()
    proc = cello_procs.start(["run"], cwd=PROJECT, env={"PORT": str(port)}, console_script=True, port=port)
    assert proc.wait_http("/hello").json()["hello"] == "from the project"
    log = proc.wait_log("Cello serving")
    # `cello run` defaults: loopback only, production, one worker, no reload.
    assert f"Cello serving webapp.main:application at http://127.0.0.1:{port} (workers 1, env production" in log, log
    assert "reload" not in log


def test_flag_beats_CELLO_variable_beats_PORT(cello_procs):
    flag, cello_var, port_var = free_port(), free_port(), free_port()
    env = {"PORT": str(port_var), "CELLO_PORT": str(cello_var), "CELLO_HOST": "127.0.0.1", "CELLO_ENV": "staging"}
    proc = cello_procs.start(["run", "simple", "--port", str(flag)], cwd=PROJECT, env=env, port=flag)
    proc.wait_http("/simple")
    assert f"at http://127.0.0.1:{flag} (workers 1, env staging" in proc.wait_log("Cello serving")
    proc = cello_procs.start(["run", "simple"], cwd=PROJECT, env=env, port=cello_var)
    proc.wait_http("/simple")


def test_CELLO_WORKERS_and_forwarded_allow_ips(cello_procs):
    port = free_port()
    env = {"CELLO_WORKERS": "2"}
    args = ["run", str(CLI_APP), "--host", "127.0.0.1", "--port", str(port), "--forwarded-allow-ips", "127.0.0.1"]
    proc = cello_procs.start(args, env=env, port=port)
    proc.wait_http()
    proc.wait_log("workers 2")
    resp = httpx.get(proc.url("/ip"), headers={"x-forwarded-for": "203.0.113.7"}, timeout=5)
    assert resp.json() == {"client_ip": "203.0.113.7"}


def test_without_forwarded_allow_ips_forwarded_headers_are_ignored(cello_procs):
    port = free_port()
    proc = cello_procs.start(["run", str(CLI_APP), "--host", "127.0.0.1", "--port", str(port)], port=port)
    resp = proc.wait_http("/ip")
    resp = httpx.get(proc.url("/ip"), headers={"x-forwarded-for": "203.0.113.7"}, timeout=5)
    assert resp.json() == {"client_ip": "127.0.0.1"}


def test_dev_defaults_debug_tracebacks_access_log_and_reload(cello_procs):
    port = free_port()
    proc = cello_procs.start(["dev", "cli_app:app", "--port", str(port)], cwd=APPS, port=port)
    proc.wait_http()
    log = proc.wait_log("Cello serving")
    assert f"Cello serving cli_app:app at http://127.0.0.1:{port} (workers 1, env development, reload on" in log, log
    resp = httpx.get(proc.url("/boom"), timeout=5)
    assert resp.status_code == 500
    assert "ValueError: boom (test)" in "".join(resp.json()["traceback"])
    proc.wait_log('"GET /boom HTTP/1.1" 500')  # access log


def test_run_has_no_tracebacks_or_access_log_by_default(cello_procs):
    port = free_port()
    proc = cello_procs.start(["run", "cli_app:app", "--port", str(port)], cwd=APPS, port=port)
    proc.wait_http()
    resp = httpx.get(proc.url("/boom"), timeout=5)
    assert resp.status_code == 500 and "traceback" not in resp.json()
    proc.wait_log("unhandled exception in GET /boom")
    assert "cello.access" not in proc.log()


def test_python_dash_m_and_help(cello_procs):
    code, out = cello_procs.run(["--help"])
    assert code == 0 and "run" in out and "dev" in out and "routes" in out
    code, out = cello_procs.run(["run", "--help"])
    assert code == 0
    for flag in ("--host", "--port", "--workers", "--reload", "--env", "--log-level", "--no-access-log",
                 "--root-path", "--forwarded-allow-ips", "--timeout-graceful-shutdown"):  # fmt: skip
        assert flag in out, flag
