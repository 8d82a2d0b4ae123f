"""HTTPS test app. TLS comes from the command line (``--ssl-certfile ...``), the ``CELLO_TLS_*``
variables, ``cello.yaml`` or, when TLS_APP_CERT/TLS_APP_KEY are set, ``app.enable_tls(TlsConfig(...))``
(TLS_APP_CA, TLS_APP_REQUIRE, TLS_APP_MIN and TLS_APP_MAX fill in the other fields)."""

import asyncio
import hashlib
import json
import os

from cello import App, Http2Config, Http3Config, Response, TlsConfig

app = App()

if os.environ.get("TLS_APP_H2"):  # Http2Config fields as JSON
    app.set_http2(Http2Config(**json.loads(os.environ["TLS_APP_H2"])))

if os.environ.get("TLS_APP_CERT"):
    app.enable_tls(
        TlsConfig(
            os.environ["TLS_APP_CERT"],
            os.environ["TLS_APP_KEY"],
            ca_path=os.environ.get("TLS_APP_CA") or None,
            require_client_cert=os.environ.get("TLS_APP_REQUIRE") == "1",
            min_version=os.environ.get("TLS_APP_MIN", "1.2"),
            max_version=os.environ.get("TLS_APP_MAX", "1.3"),
        )
    )

if os.environ.get("TLS_APP_H3") is not None:  # Http3Config fields as JSON
    app.enable_http3(Http3Config(**json.loads(os.environ["TLS_APP_H3"])))


@app.get("/")
def index(request):
    return {
        "scheme": request.scheme,
        "http_version": request.http_version,
        "client_cert": request.context.get("client_cert"),
        "url": request.url,
    }


@app.post("/echo")
def echo(request):
    body = request.body()
    return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


@app.post("/upload")
async def upload(request):
    # Reads the body as it arrives: the server never needs it whole.
    digest, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


@app.get("/big/{mib:int}")
def big(request, mib: int):
    chunk = bytes(range(256)) * 4096  # 1 MiB

    def chunks():
        for _ in range(mib):
            yield chunk

    return Response.stream(chunks(), content_type="application/octet-stream")


@app.get("/slow")
async def slow(request):
    await asyncio.sleep(1.0)
    return {"slow": True}


@app.get("/fail")
def fail(request):
    raise ValueError("boom")


if __name__ == "__main__":
    app.run()
