"""Templates rendered by minijinja (Rust), over a real socket and in-process."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from cello import App, MiniJinjaEngine, Response, TemplateEngine, TemplateError, TemplateNotFound
from cello.testing import TestClient

SITE = Path(__file__).resolve().parents[1] / "apps" / "templates_site"


@pytest.fixture(scope="module")
def http(serve):
    server = serve("templates_app")
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def test_inheritance_includes_macros_filters_and_url_for(http):
    r = http.get("/", params={"name": "Ann"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "<title>Home</title>" in html
    assert "<h1>Hello Ann</h1>" in html
    assert "<li>1: A</li><li>2: B</li>" in html  # loop + filter
    assert '<span class="badge">2 items</span>' in html  # imported macro
    assert '<p class="note">&lt;b&gt;bold?&lt;/b&gt;</p>' in html  # include, escaped
    assert '<a href="/">home</a> <a href="/users/7">user 7</a>' in html  # url_for
    assert "<footer>Cello &lt;test&gt;</footer>" in html  # a global, escaped


def test_autoescape_of_variables(http):
    html = http.get("/", params={"name": "<script>x</script>"}).text
    assert "<script>x</script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html


def test_python_objects_in_context(http):
    html = http.get("/users/3").text
    assert "<p>user3 (u3@example.com) hi, user3</p>" in html


def test_autoescape_by_extension_and_for_strings(http):
    assert http.get("/plain", params={"value": "<x>"}).text == "raw: <x>"
    assert http.get("/string", params={"value": "<x>"}).json() == {"out": "&lt;x&gt;|<x>"}


def test_csrf_token_global(http):
    assert 'value="tok123"' in http.get("/csrf").text


def test_status_and_missing_template(http):
    assert http.get("/created").status_code == 201
    r = http.get("/missing")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"


def test_engine_directly(tmp_path):
    (tmp_path / "a.html").write_text("{{ x }}")
    engine = MiniJinjaEngine(tmp_path)
    assert isinstance(engine, TemplateEngine)
    assert engine.render("a.html", {"x": "<&>"}) == "&lt;&amp;&gt;"
    assert engine.render_string("{{ 1 + 2 }}") == "3"
    assert MiniJinjaEngine(tmp_path, auto_escape=False).render("a.html", {"x": "<&>"}) == "<&>"
    with pytest.raises(TemplateNotFound, match="b.html"):
        engine.render("b.html")
    with pytest.raises(TemplateError, match="syntax"):
        engine.render_string("{% if %}")
    with pytest.raises(TemplateNotFound):
        engine.render("../etc/passwd")  # never escapes the directory
    engine.add_filter("shout", lambda v, n=1: str(v).upper() + "!" * n)
    assert engine.render_string("{{ 'hi' | shout }} {{ 'yo' | shout(3) }} {{ 'x' | shout(n=2) }}") == "HI! YO!!! X!!"
    engine.add_global("twice", lambda x: x * 2)
    assert engine.render_string("{{ twice(21) }} {{ twice('ab') }}") == "42 abab"
    assert engine.render_string("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": 2}}) == (
        "b=1;a=2;"
    )


def test_reload_in_development(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(SITE, site)
    app = App()
    app.enable_templates(site)

    @app.get("/")
    def page():
        return Response.template("plain.txt", {"value": 1})

    with TestClient(app, debug=True) as client:
        assert client.get("/").text == "raw: 1"
        (site / "plain.txt").write_text("changed: {{ value }}\n")
        time.sleep(0.01)
        assert client.get("/").text == "changed: 1"


def test_no_reload_in_production(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(SITE, site)
    app = App()
    app.enable_templates(site)

    @app.get("/")
    def page():
        return Response.template("plain.txt", {"value": 1})

    with TestClient(app, debug=False) as client:
        assert client.get("/").text == "raw: 1"
        (site / "plain.txt").write_text("changed: {{ value }}\n")
        assert client.get("/").text == "raw: 1"


def test_render_without_enable_is_a_clear_error():
    with pytest.raises(RuntimeError, match="enable_templates"):
        App().render("x.html")
