"""Option resolution for `cello run/dev` and `app.run()`, `--workers auto` (cgroup quota) and the
pyproject lookup, without starting processes."""

import pytest
from cello import App, _cli, _loader, _supervisor, cli


def cli_opts(argv, environ=None):
    parser, _ = cli.build_parser()
    args = parser.parse_args(argv)
    defaults = dict(cli.DEV_DEFAULTS if args.command == "dev" else cli.RUN_DEFAULTS, app_spec=args.app)
    return _cli.options_from_args(args, defaults, environ or {})


# ---- cgroup quota -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "cpus"),
    [("max 100000", None), ("max", None), ("150000 100000", 1.5), ("200000 100000", 2.0), ("50000 100000", 0.5),
     ("garbage", None), ("", None)],
)  # fmt: skip
def test_parse_cpu_max(raw, cpus):
    assert _cli.parse_cpu_max(raw) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"), [("-1", "100000", None), ("250000", "100000", 2.5), ("x", "100000", None)]
)
def test_parse_cfs_quota(quota, period, cpus):
    assert _cli.parse_cfs_quota(quota, period) == cpus


def fake_affinity(monkeypatch, n):
    monkeypatch.setattr(_cli.os, "sched_getaffinity", lambda pid: set(range(n)))


def test_auto_workers_v2_quota_rounds_up_and_is_capped_by_affinity(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    monkeypatch.setenv("CELLO_CGROUP_ROOT", str(tmp_path))
    fake_affinity(monkeypatch, 8)
    assert _cli.auto_workers() == 2  # ceil(1.5)
    fake_affinity(monkeypatch, 1)
    assert _cli.auto_workers() == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    fake_affinity(monkeypatch, 6)
    assert _cli.auto_workers() == 6  # unlimited: every CPU we may run on
    (tmp_path / "cpu.max").write_text("10000 100000\n")
    assert _cli.auto_workers() == 1  # never zero


def test_auto_workers_v1_quota(tmp_path, monkeypatch):
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("300000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    monkeypatch.setenv("CELLO_CGROUP_ROOT", str(tmp_path))
    fake_affinity(monkeypatch, 16)
    assert _cli.cgroup_cpu_limit() == 3.0
    assert _cli.auto_workers() == 3
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cli.auto_workers() == 16


def test_auto_without_cgroup_files_uses_affinity(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLO_CGROUP_ROOT", str(tmp_path / "missing"))
    fake_affinity(monkeypatch, 3)
    assert _cli.auto_workers() == 3
    assert cli_opts(["run", "x", "--workers", "auto"]).workers == 3


# ---- command defaults and precedence ------------------------------------------------------------


def test_run_defaults():
    o = cli_opts(["run", "m:app"])
    # Loopback by default, like uvicorn and granian: exposing the app is an explicit choice.
    assert (o.host, o.port, o.env, o.debug, o.workers, o.reload) == ("127.0.0.1", 8000, "production", False, 1, False)
    assert o.access_log is False and o.shutdown_timeout == 30.0 and o.max_restarts == 5
    assert o.app_spec == "m:app"


def test_dev_defaults():
    o = cli_opts(["dev", "m:app"])
    assert (o.host, o.port, o.env, o.debug, o.reload, o.access_log) == ("127.0.0.1", 8000, "development", True, True,
                                                                        True)  # fmt: skip


def test_port_precedence_flag_then_CELLO_PORT_then_PORT():
    assert cli_opts(["run", "m"], {"PORT": "5000"}).port == 5000
    assert cli_opts(["run", "m"], {"PORT": "5000", "CELLO_PORT": "6000"}).port == 6000
    assert cli_opts(["run", "m", "--port", "7000"], {"PORT": "5000", "CELLO_PORT": "6000"}).port == 7000


def test_every_flag_has_a_CELLO_variable():
    env = {
        "CELLO_HOST": "10.0.0.1", "CELLO_PORT": "1234", "CELLO_WORKERS": "3", "CELLO_ENV": "staging",
        "CELLO_LOG_LEVEL": "DEBUG", "CELLO_ACCESS_LOG": "0", "CELLO_ROOT_PATH": "/api",
        "CELLO_FORWARDED_ALLOW_IPS": "10.0.0.0/8, 127.0.0.1", "CELLO_TIMEOUT_GRACEFUL_SHUTDOWN": "7.5",
        "CELLO_MAX_RESTARTS": "9", "CELLO_DEBUG": "true",
    }  # fmt: skip
    o = cli_opts(["run", "m"], env)
    assert (o.host, o.port, o.workers, o.env, o.log_level, o.debug) == ("10.0.0.1", 1234, 3, "staging", "debug", True)
    assert (o.access_log, o.root_path, o.shutdown_timeout, o.max_restarts) == (False, "/api", 7.5, 9)
    assert o.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]
    o = cli_opts(["run", "m", "--host", "::1", "--access-log", "--env", "prod", "--workers", "2"], env)
    assert (o.host, o.access_log, o.env, o.workers) == ("::1", True, "prod", 2)
    assert cli_opts(["run", "m"], {"CELLO_RELOAD": "1"}).reload is True


def test_usage_errors():
    with pytest.raises(_cli.UsageError, match="--reload cannot be combined"):
        cli_opts(["run", "m", "--reload", "--workers", "2"])
    with pytest.raises(_cli.UsageError, match="--reload cannot be combined"):
        cli_opts(["run", "m"], {"CELLO_RELOAD": "yes", "CELLO_WORKERS": "2"})
    with pytest.raises(_cli.UsageError, match="at least 1"):
        cli_opts(["run", "m", "--workers", "0"])
    with pytest.raises(_cli.UsageError, match="must start with '/'"):
        cli_opts(["run", "m", "--root-path", "api"])
    with pytest.raises(_cli.UsageError, match="CELLO_RELOAD"):
        cli_opts(["run", "m"], {"CELLO_RELOAD": "maybe"})
    with pytest.raises(_cli.UsageError, match="CELLO_PORT"):
        cli_opts(["run", "m"], {"CELLO_PORT": "http"})


def test_reloader_child_serves_on_the_reserved_port_without_reloading():
    o = cli_opts(["dev", "m", "--port", "0"], {_cli.RELOADER_PORT_ENV: "4321"})
    assert (o.port, o.reload) == (4321, False)


# ---- app.run() ----------------------------------------------------------------------------------


def run_opts(argv, **kw):
    args = {"host": "127.0.0.1", "port": 8000, "debug": None, "env": None, "workers": None, "reload": False,
            "logs": None} | kw  # fmt: skip
    return _cli.resolve_run_options(argv=argv, **args)


def test_app_run_arguments_are_defaults_under_flags(monkeypatch):
    for var in ("CELLO_PORT", "PORT", "CELLO_ENV", "CELLO_WORKERS", "CELLO_HOST"):
        monkeypatch.delenv(var, raising=False)
    o = run_opts([], port=9000, workers=2)
    assert (o.host, o.port, o.workers, o.env, o.debug, o.logs) == ("127.0.0.1", 9000, 2, "development", True, True)
    o = run_opts(["--port", "9100", "--my-own-flag", "x", "--workers", "3", "--env", "production"], port=9000)
    assert (o.port, o.workers, o.env, o.debug, o.logs, o.access_log) == (9100, 3, "production", False, False, False)
    monkeypatch.setenv("CELLO_PORT", "9200")
    assert run_opts([], port=9000).port == 9200


def test_app_run_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        run_opts(["--reload", "--workers", "2"])
    assert exc.value.code == 2
    assert "--reload cannot be combined" in capsys.readouterr().err


def test_forwarded_allow_ips_star_trusts_everyone():
    app = App()
    opts = cli_opts(["run", "m", "--forwarded-allow-ips", "*"])
    _supervisor.apply_options(app, opts)
    assert app.server_config()["trustedProxies"] == ["0.0.0.0/0", "::/0"]


# ---- pyproject ----------------------------------------------------------------------------------


def test_pyproject_lookup(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\napp = "wrong"\n\n[tool.cello]\napp = "pkg.web:application"\n')
    assert _loader.spec_from_pyproject(str(path)) == "pkg.web:application"
    assert _loader._tiny_toml_app(path.read_text()) == "pkg.web:application"  # the Python 3.10 fallback
    path.write_text('[tool.other]\napp = "no"\n')
    assert _loader.spec_from_pyproject(str(path)) is None
    assert _loader._tiny_toml_app(path.read_text()) is None
    assert _loader.spec_from_pyproject(str(tmp_path / "missing.toml")) is None


def test_worker_timeout_flag_and_variable():
    # Unset: the app's TimeoutConfig.worker_timeout (default 30) applies.
    assert cli_opts(["run", "m"]).worker_timeout is None
    assert cli_opts(["run", "m"], {"CELLO_WORKER_TIMEOUT": "12.5"}).worker_timeout == 12.5
    assert cli_opts(["run", "m", "--worker-timeout", "3"], {"CELLO_WORKER_TIMEOUT": "12.5"}).worker_timeout == 3.0
    with pytest.raises(_cli.UsageError):
        cli_opts(["run", "m", "--worker-timeout", "0"])
    with pytest.raises(_cli.UsageError):
        cli_opts(["run", "m"], {"CELLO_WORKER_TIMEOUT": "soon"})


def test_worker_timeout_reaches_the_server_config():
    from cello import TimeoutConfig

    app = App()
    assert app.server_config()["timeouts"]["worker_timeout"] == 30
    app.set_timeouts(TimeoutConfig(worker_timeout=4))
    assert app.server_config()["timeouts"]["worker_timeout"] == 4
