"""Cello benchmark app with every middleware of issue 10 on (target `cello-edge`), written
against Cello's public API. Endpoints and sync handlers as bench/apps/cello_app.py.

No layer short-circuits the standard requests: the response cache looks up and decides on
every request but stores nothing (the middleware marks answers `no-store`, so each request
still runs the handler); wrk sends no Origin or Accept-Encoding, so CORS and compression only
decide; the access-log layer builds a record per request (`logs=False` drops the line at
WARNING level, as in the other targets). Quote it against `hyper` from the same run.
"""
import sys
import tempfile

from cello import CSP, App, Response, SecurityHeadersConfig, StaticFilesConfig

app = App()
app.enable_request_id()
app.enable_logging()
app.enable_cors(origins=["https://bench.example.com"], max_age=600)
headers = SecurityHeadersConfig.secure()
headers.csp = CSP().default_src(["self"]).script_src(["self", "nonce"])
app.enable_security_headers(headers)
app.enable_compression()
app.enable_etag()
app.enable_caching(ttl=60)
app.enable_circuit_breaker()
app.enable_body_limit(1024 * 1024)
app.enable_static_files(StaticFilesConfig(root=tempfile.mkdtemp(prefix="cello-bench-static-"), prefix="/static"))


@app.exception_handler(LookupError)
def lookup_error(request, exc):
    return {"error": str(exc)}, 404


@app.use
def passthrough(request, call_next):
    response = call_next(request)
    response.set_header("Cache-Control", "no-store")
    return response


@app.get("/")
def home(request):
    return {"message": "Hello, World!"}


@app.get("/plaintext")
def plaintext(request):
    return Response.text("Hello, World!")


@app.get("/users/{id}")
def user(request):
    return {"id": int(request.params["id"])}


@app.post("/echo")
def echo(request):
    return request.json()


if __name__ == "__main__":
    args = sys.argv[1:]
    opt = {k.lstrip("-"): v for k, v in zip(args[::2], args[1::2])}
    app.run(host=opt.get("host", "127.0.0.1"), port=int(opt.get("port", "8000")),
            workers=int(opt.get("workers", "1")), env="production", logs=False)
