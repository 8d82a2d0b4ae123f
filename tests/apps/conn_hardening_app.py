"""Issue 9 items 3, 4, 7 (connection level): small timeouts and budgets so the attacks are quick.

read_header=1 s, idle=3 s, write=2 s; max_connections=300 (plus the probe reserve);
max_requests_per_connection=3; a 24 MiB budget for buffered bodies (10 MiB each at most);
HTTP/2: at most 2 MiB of unsent response data per connection, 64 MiB in all (these two and the
budget from conn_hardening.yaml)."""

import os
from pathlib import Path

from cello import App, LimitsConfig, Response, TimeoutConfig

# The body budget and the HTTP/2 caps come from cello.yaml, as in a deployment.
os.environ.setdefault("CELLO_CONFIG", str(Path(__file__).with_name("conn_hardening.yaml")))

app = App()
app.set_limits(LimitsConfig(max_connections=300, max_requests_per_connection=3, max_body_size=10 * 1024 * 1024))
app.set_timeouts(TimeoutConfig(read_header=1, idle=3, write=2, read_body=20, handler=20))

BIG = b"x" * (1536 * 1024)


@app.get("/ping")
def ping(request):
    return {"pong": True}


@app.post("/upload")
def upload(request):
    return {"size": len(request.body())}


@app.get("/big")
def big(request):
    return Response(BIG, content_type="application/octet-stream")


@app.get("/bare400")
def bare400(request):
    return Response(b"", status=400, headers={"connection": "close"})


if __name__ == "__main__":
    app.run()
