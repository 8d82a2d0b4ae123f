"""Issue 8 item 7: a setting Cello cannot honour raises a clear error instead of being ignored;
ClusterConfig reaches the run options."""

import inspect
import json

import cello
import pytest
from cello import App, ClusterConfig, FeatureNotAvailable, Http2Config, OpenTelemetryConfig, _cli


def test_feature_not_available_is_a_not_implemented_error_naming_the_issue():
    exc = FeatureNotAvailable("thing", issue=8, hint="do that")
    assert isinstance(exc, NotImplementedError)
    assert str(exc) == "thing is not available yet (issue 8): do that"
    assert "FeatureNotAvailable" in cello.__all__


# ---- HTTP/2 push ---------------------------------------------------------------------------------


def test_http2_push_is_refused_by_set_http2():
    app = App()
    with pytest.raises(FeatureNotAvailable, match="HTTP/2 server push"):
        app.set_http2(Http2Config(enable_push=True))
    app.set_http2(Http2Config(max_concurrent_streams=10))  # the rest is fine
    assert app.server_config()["http2"]["max_concurrent_streams"] == 10


def test_http2_push_set_after_set_http2_is_refused_when_the_server_is_configured():
    app = App()
    conf = Http2Config()
    app.set_http2(conf)
    conf.enable_push = True
    with pytest.raises(FeatureNotAvailable, match="enable_push"):
        app.server_config()


def test_http2_push_from_cello_yaml_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "cello.yaml"
    path.write_text("http2:\n  enablePush: true\n")
    monkeypatch.setenv("CELLO_CONFIG", str(path))
    app = App()
    opts = _cli.resolve_run_options(host="127.0.0.1", port=0, debug=None, env=None, workers=None, reload=False,
                                    logs=False, argv=[])  # fmt: skip
    with pytest.raises(FeatureNotAvailable, match="HTTP/2 server push"):
        app._serve(opts)


# ---- OTLP metrics --------------------------------------------------------------------------------


def test_telemetry_with_the_default_config_is_accepted():
    conf = OpenTelemetryConfig("svc")
    assert conf.export_metrics is True  # the published default, readable as before
    assert inspect.signature(OpenTelemetryConfig).parameters["export_metrics"].default is True
    app = App()
    app.enable_telemetry(conf)
    app.enable_telemetry()
    assert app.server_config()["telemetry"]["enabled"] is True


def test_explicit_otlp_metrics_are_refused():
    app = App()
    with pytest.raises(FeatureNotAvailable, match=r"OTLP metrics export is not available yet \(issue 8\)"):
        app.enable_telemetry(OpenTelemetryConfig("svc", export_metrics=True))
    conf = OpenTelemetryConfig("svc", export_metrics=False)
    app.enable_telemetry(conf)  # off is honest
    conf.export_metrics = True  # asked for later: refused too
    with pytest.raises(FeatureNotAvailable):
        app.enable_telemetry(conf)


def test_otel_config_equality_ignores_how_the_default_was_reached():
    assert OpenTelemetryConfig("s") == OpenTelemetryConfig("s", export_metrics=True)


# ---- ClusterConfig -------------------------------------------------------------------------------


def resolve(cluster, argv=(), workers=None):
    return _cli.resolve_run_options(host="127.0.0.1", port=0, debug=None, env=None, workers=workers, reload=False,
                                    logs=None, argv=list(argv), cluster=cluster)  # fmt: skip


def test_cluster_config_sets_the_run_options(monkeypatch):
    for key in ("CELLO_WORKERS", "CELLO_MAX_RESTARTS", "CELLO_TIMEOUT_GRACEFUL_SHUTDOWN"):
        monkeypatch.delenv(key, raising=False)
    opts = resolve(ClusterConfig(workers=3, cpu_affinity=True, max_restarts=9, shutdown_timeout=7))
    assert (opts.workers, opts.cpu_affinity, opts.max_restarts, opts.shutdown_timeout) == (3, True, 9, 7.0)
    assert resolve(ClusterConfig(graceful_shutdown=False)).shutdown_timeout == 0.0
    defaults = resolve(None)
    assert (defaults.workers, defaults.cpu_affinity, defaults.max_restarts, defaults.shutdown_timeout) == (
        1, False, 5, 30.0)  # fmt: skip
    assert defaults.health_checks is True  # as for `cello run`


def test_flags_variables_and_run_arguments_beat_the_cluster_config(monkeypatch):
    for key in ("CELLO_WORKERS", "CELLO_MAX_RESTARTS"):
        monkeypatch.delenv(key, raising=False)
    cluster = ClusterConfig(workers=3, max_restarts=9)
    assert resolve(cluster, argv=["--workers", "2", "--max-restarts", "1"]).workers == 2
    assert resolve(cluster, argv=["--max-restarts", "1"]).max_restarts == 1
    assert resolve(cluster, workers=4).workers == 4
    monkeypatch.setenv("CELLO_WORKERS", "5")
    assert resolve(cluster).workers == 5


def test_set_cluster_takes_a_cluster_config():
    with pytest.raises(TypeError, match="ClusterConfig"):
        App().set_cluster({"workers": 2})
    app = App()
    app.set_cluster(ClusterConfig(workers=2))
    assert json.dumps(app.server_config())  # not part of the data-plane config
