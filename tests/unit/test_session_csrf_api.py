"""Issue 11 items 4 and 5: the Python names, signatures and defaults of API.md, and the
config sections they produce (validated by the Rust types)."""

import inspect

import pytest
from cello import App, ConfigError, SessionConfig

SECRET = "0123456789abcdef0123456789abcdef-unit"


def test_session_config_defaults_are_api_md():
    c = SessionConfig()
    assert (c.cookie_name, c.cookie_path, c.cookie_domain) == ("session_id", "/", None)
    assert (c.cookie_secure, c.cookie_http_only, c.cookie_same_site, c.max_age) == (True, True, "Lax", 86400)
    assert (c.secret, c.store) == (None, "cookie")


def test_enable_csrf_signature_is_api_md():
    params = inspect.signature(App.enable_csrf).parameters
    assert {k: p.default for k, p in params.items() if k != "self"} == {
        "secret": None,
        "cookie_name": "csrftoken",
        "header_name": "X-CSRF-Token",
        "form_field": "csrf_token",
        "exempt_paths": None,
        "trusted_origins": None,
    }


def test_sections_reach_the_server_config():
    app = App()
    app.enable_session(SessionConfig(secret=SECRET, store="memory"))
    app.enable_csrf(secret=SECRET, exempt_paths=["/hooks/*"], trusted_origins=["https://a.test"])
    cfg = app.server_config()
    assert cfg["session"]["store"] == "memory"
    assert cfg["csrf"]["exempt_paths"] == ["/hooks/*"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: a.enable_session(SessionConfig(secret=SECRET, store="disk")), "store"),
        (lambda a: a.enable_session(SessionConfig(secret="short")), "32 bytes"),
        (lambda a: a.enable_csrf(secret=SECRET, trusted_origins=["evil.test"]), "trusted"),
        (lambda a: a.enable_csrf(secret=SECRET, header_name="bad header"), "header"),
    ],
)
def test_bad_settings_are_refused_at_once(call, match):
    with pytest.raises((ValueError, ConfigError), match=match):
        call(App())


def test_enable_session_takes_a_session_config():
    with pytest.raises(TypeError):
        App().enable_session({"store": "memory"})
