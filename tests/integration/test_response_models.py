"""response_model= / return annotations validate and serialise; status_code= is the default."""

from __future__ import annotations

import httpx
import pytest
from cello.testing import TestClient


@pytest.fixture(scope="module")
def http(serve):
    server = serve("response_models_app")
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        yield c


def test_extra_fields_are_dropped(http):
    r = http.get("/model")
    assert r.status_code == 200
    assert r.json() == {"id": 1, "name": "ann"}


def test_return_annotation_is_the_model(http):
    assert http.get("/annotation").json() == {"id": 2, "name": "bob"}
    assert http.get("/dataclass").json() == {"x": 1, "y": 2}


def test_list_model(http):
    assert http.get("/list").json() == [{"id": i, "name": f"u{i}"} for i in range(3)]


def test_aliases_on_output(http):
    assert http.get("/alias").json() == {"userName": "zed"}


def test_status_code_default(http):
    r = http.post("/created")
    assert r.status_code == 201 and r.json() == {"id": 3, "name": "cy"}
    r = http.delete("/gone")
    assert r.status_code == 204 and r.content == b""


def test_explicit_status_and_response_win(http):
    r = http.get("/tuple")
    assert r.status_code == 202 and r.json() == {"id": 4, "name": "di"}
    r = http.get("/response")
    assert r.text == "as is"


def test_attributes_are_read_from_objects(http):
    assert http.get("/obj").json() == {"id": 5, "name": "orm"}


def test_invalid_output_is_a_500(http):
    r = http.get("/invalid")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"


def test_invalid_output_raises_in_testclient(load_app):
    from cello.response_model import ResponseValidationError

    with TestClient(load_app("response_models_app").app) as client, pytest.raises(ResponseValidationError):
        client.get("/invalid")
