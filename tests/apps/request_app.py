"""Request introspection: each route reports what the handler sees.

Every property is read in its own try block so a missing or failing accessor shows up as
{"__error__": "..."} for that field only. CELLO_TEST_TRUSTED_PROXIES (comma-separated) is passed
to app.set_trusted_proxies()."""

import hashlib
import os

from cello import App

app = App()

_proxies = os.environ.get("CELLO_TEST_TRUSTED_PROXIES")
if _proxies:
    app.set_trusted_proxies([p.strip() for p in _proxies.split(",")])


def probe(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 -- reported to the test, which asserts on the value
        return {"__error__": f"{type(exc).__name__}: {exc}"}


def describe(request):
    h = lambda: request.headers  # noqa: E731
    return {
        "method": probe(lambda: request.method),
        "path": probe(lambda: request.path),
        "params": probe(lambda: dict(request.params)),
        "query": probe(lambda: dict(request.query)),
        "query_params": probe(lambda: dict(request.query_params)),
        "tags": probe(lambda: list(request.query_list("tag"))),
        "no_tags": probe(lambda: list(request.query_list("absent"))),
        "header_get_exact": probe(lambda: h().get("X-Custom")),
        "header_get_lower": probe(lambda: h().get("x-custom")),
        "header_get_upper": probe(lambda: h().get("X-CUSTOM")),
        "header_index_mixed": probe(lambda: h()["x-CuStOm"]),
        "header_contains_upper": probe(lambda: "X-CUSTOM" in h()),
        "header_missing": probe(lambda: h().get("X-Not-Sent")),
        "get_header": probe(lambda: request.get_header("x-custom")),
        "get_header_default": probe(lambda: request.get_header("X-Not-Sent", "fallback")),
        "get_header_none": probe(lambda: request.get_header("X-Not-Sent")),
        "cookies": probe(lambda: dict(request.cookies)),
        "url": probe(lambda: str(request.url)),
        "scheme": probe(lambda: request.scheme),
        "content_length": probe(lambda: request.content_length),
        "content_type": probe(lambda: request.content_type()),
        "is_json": probe(lambda: request.is_json()),
        "is_form": probe(lambda: request.is_form()),
        "is_multipart": probe(lambda: request.is_multipart()),
        "user_agent": probe(lambda: request.user_agent()),
        "accepts_json": probe(lambda: request.accepts("application/json")),
        "accepts_html": probe(lambda: request.accepts("text/html")),
        "accepts_png": probe(lambda: request.accepts("image/png")),
        "is_xhr": probe(lambda: request.is_xhr()),
        "is_secure": probe(lambda: request.is_secure()),
        "host": probe(lambda: request.host()),
        "request_id": probe(lambda: request.request_id()),
        "client_ip": probe(lambda: request.client_ip()),
        "client": probe(lambda: str(request.client)),
    }


@app.route("/inspect/{name}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def inspect(request):
    return describe(request)


@app.get("/context-facts/{name}")
def context_facts(request):
    return {k: request.context.get(k) for k in ("route", "client_ip", "scheme")}


@app.get("/inspect-async/{name}")
async def inspect_async(request):
    return describe(request)


@app.get("/header-names")
def header_names(request):
    return {
        "names": probe(lambda: sorted(filter(lambda k: k.lower().startswith("x-"), request.headers.keys()))),
        "mixed": probe(lambda: request.headers.get("x-mixed-case")),
        "client": probe(lambda: str(request.client)),
        "client_ip": probe(lambda: request.client_ip()),
        "scheme": probe(lambda: request.scheme),
    }


@app.route("/body", methods=["POST", "PUT", "PATCH", "DELETE"])
def body(request):
    raw = request.body()
    return {
        "len": len(raw),
        "is_bytes": isinstance(raw, bytes),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "text": probe(lambda: request.text()),
        "again_equal": request.body() == raw,
    }


@app.post("/json")
def json_body(request):
    data = request.json()
    return {"data": data, "cached": request.json() is data}


@app.post("/json-async")
async def json_body_async(request):
    data = request.json()
    return {"data": data, "cached": request.json() is data}


@app.post("/form")
def form(request):
    fields = request.form()
    return {
        "name": probe(lambda: fields.get("name")),
        "lang": probe(lambda: fields.get("lang")),
        "empty": probe(lambda: fields.get("empty")),
        "missing": probe(lambda: fields.get("missing")),
        "is_form": request.is_form(),
        "is_multipart": request.is_multipart(),
    }


def _first(value):
    return value[0] if isinstance(value, list | tuple) else value


@app.post("/files")
def files(request):
    uploads = request.files()
    upload = _first(uploads["upload"])
    data = upload.read()
    result = {
        "filename": upload.filename,
        "content_type": upload.content_type,
        "size": upload.size(),
        "read_len": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "extension": probe(lambda: upload.extension()),
        "field_name": probe(lambda: request.form().get("name")),
    }
    save_to = request.query.get("save_to")
    if save_to:
        upload.save(save_to)
    if "note" in uploads:
        result["note_text"] = _first(uploads["note"]).read_text()
    return result


@app.get("/typed/{id}")
def typed(request):
    return {
        "s": probe(lambda: request.get_query_param("s")),
        "s_default": probe(lambda: request.get_query_param("missing", "dflt")),
        "s_none": probe(lambda: request.get_query_param("missing")),
        "n": probe(lambda: request.get_query_int("n")),
        "n_default": probe(lambda: request.get_query_int("missing", 7)),
        "f": probe(lambda: request.get_query_float("f")),
        "f_default": probe(lambda: request.get_query_float("missing", 1.25)),
        "b_true": probe(lambda: request.get_query_bool("t")),
        "b_false": probe(lambda: request.get_query_bool("fa")),
        "b_one": probe(lambda: request.get_query_bool("one")),
        "b_zero": probe(lambda: request.get_query_bool("zero")),
        "b_default": probe(lambda: request.get_query_bool("missing", True)),
        "param": probe(lambda: request.get_param("id")),
        "param_int": probe(lambda: request.get_param_int("id")),
        "param_default": probe(lambda: request.get_param("nope", "dflt")),
        "param_int_default": probe(lambda: request.get_param_int("nope", 5)),
    }


@app.get("/context")
def context(request):
    request.context["direct"] = 1
    request.set_context("via_set", {"nested": True})
    return {
        "direct_via_get": probe(lambda: request.get_context("direct")),
        "via_set_direct": probe(lambda: request.context["via_set"]),
        "missing": probe(lambda: request.get_context("never-set")),
        "keys": probe(lambda: sorted(request.context.keys())),
    }


@app.get("/context-fresh")
def context_fresh(request):
    """A new request must start with a context that holds nothing set by an earlier request."""
    return {"direct": probe(lambda: request.get_context("direct"))}


if __name__ == "__main__":
    app.run()
