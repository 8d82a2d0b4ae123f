"""Typed parameters, dataclass bodies and returns work without pydantic installed (it is an
optional dependency); only response_model= asks for it, with a clear error."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["pydantic"] = None  # import pydantic -> ImportError
    import dataclasses
    from cello import App, Query
    from cello.testing import TestClient

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    app = App()

    @app.get("/items/{item_id}")
    def item(item_id: int, tags: list[str] = Query(default=[]), limit: int = Query(5, le=10)):
        return {"item_id": item_id, "tags": tags, "limit": limit}

    @app.post("/points", status_code=201)
    def points(p: Point) -> Point:
        return p

    with TestClient(app) as c:
        assert c.get("/items/3?tags=a&tags=b").json() == {"item_id": 3, "tags": ["a", "b"], "limit": 5}
        errs = c.get("/items/x?limit=11").json()["errors"]
        assert {e["type"] for e in errs} == {"int_parsing", "less_than_equal"}, errs
        r = c.post("/points", json={"x": 1, "y": 2})
        assert r.status_code == 201 and r.json() == {"x": 1, "y": 2}, r.text
        assert c.post("/points", json={"x": 1}).status_code == 422

    bad = App()

    @bad.get("/", response_model=Point)
    def h():
        return {}

    try:
        TestClient(bad).get("/")
    except RuntimeError as e:
        assert "needs pydantic" in str(e)
    else:
        raise AssertionError("response_model= without pydantic must fail clearly")
    print("ok")
    """
)


def test_developer_api_without_pydantic():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
