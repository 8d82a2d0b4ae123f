"""Every Response constructor of API.md, plus cookies and header validation.

File routes take the file path from the `path` query parameter (the tests create the files)."""

import datetime

from cello import App, Response

app = App()


@app.get("/json")
def json_route(request):
    return Response.json({"kind": "json", "n": [1, 2]}, status=201)


@app.get("/text")
def text_route(request):
    return Response.text("héllo text")


@app.get("/text-status")
def text_status(request):
    return Response.text("missing", status=404)


@app.get("/html")
def html_route(request):
    return Response.html("<h1>hi</h1>", status=202)


@app.get("/binary")
def binary_route(request):
    return Response.binary(b"\x89PNG\x00\x01")


@app.get("/binary-typed")
def binary_typed(request):
    return Response.binary(b"\x89PNG\x00\x01", content_type="image/png", status=200)


@app.get("/constructor")
def constructor(request):
    return Response(b"custom", status=299, headers={"X-One": "1"}, content_type="application/x-custom")


@app.get("/file")
def file_route(request):
    return Response.file(request.query["path"])


@app.get("/file-named")
def file_named(request):
    return Response.file(request.query["path"], filename="report.csv", content_type="text/csv")


@app.get("/sendfile")
def sendfile_route(request):
    return Response.sendfile(request.query["path"])


@app.get("/sendfile-typed")
def sendfile_typed(request):
    return Response.sendfile(request.query["path"], content_type="application/x-test")


@app.get("/range")
def range_route(request):
    return Response.file_range(request.query["path"], request.headers.get("range"))


@app.get("/redirect")
def redirect_route(request):
    return Response.redirect("/target")


@app.get("/redirect-permanent")
def redirect_permanent(request):
    return Response.redirect("/target", permanent=True)


@app.get("/redirect-307")
def redirect_307(request):
    return Response.redirect("/target?x=1", status=307)


@app.get("/redirect-308")
def redirect_308(request):
    return Response.redirect("https://example.com/elsewhere", status=308)


@app.get("/no-content")
def no_content(request):
    return Response.no_content()


@app.post("/created")
def created(request):
    return Response.created({"id": 7}, location="/items/7")


@app.post("/created-empty")
def created_empty(request):
    return Response.created()


@app.get("/xml")
def xml_route(request):
    return Response.xml({"name": "cello", "note": "a < b & c", "items": [1, 2]}, root_name="data")


@app.get("/xml-default")
def xml_default(request):
    return Response.xml({"name": "cello"}, status=202)


@app.get("/cookies")
def cookies(request):
    resp = Response.json({"cookies": True})
    resp.set_cookie(
        "session",
        "abc123",
        max_age=3600,
        path="/app",
        domain="example.com",
        secure=True,
        httponly=True,
        samesite="Strict",
    )
    resp.set_cookie("theme", "dark")
    resp.set_cookie("until", "2030", expires=datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    resp.delete_cookie("old")
    return resp


@app.get("/set-header")
def set_header(request):
    resp = Response.json({"ok": True})
    resp.set_header("X-Added", "value-1")
    return resp


@app.get("/header-injection")
def header_injection(request):
    resp = Response.json({"ok": True})
    outcome = {}
    for name, value in [
        ("crlf", "a\r\nInjected: 1"),
        ("lf", "a\nInjected: 2"),
        ("cr", "a\rInjected: 3"),
        ("nul", "a\x00b"),
    ]:
        try:
            resp.set_header("X-Bad-" + name, value)
            outcome[name] = "accepted"
        except ValueError:
            outcome[name] = "rejected"
        except Exception as exc:  # noqa: BLE001 -- the test reports the unexpected type
            outcome[name] = f"raised {type(exc).__name__}"
    try:
        resp.set_header("X-Bad\r\nName", "v")
        outcome["name-crlf"] = "accepted"
    except ValueError:
        outcome["name-crlf"] = "rejected"
    except Exception as exc:  # noqa: BLE001
        outcome["name-crlf"] = f"raised {type(exc).__name__}"
    return Response.json(outcome)


if __name__ == "__main__":
    app.run()
