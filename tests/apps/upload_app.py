"""Large request bodies for tests/integration/test_uploads.py (max_body_size 2 GiB)."""

import hashlib
import os

from cello import App, LimitsConfig, TimeoutConfig

app = App()
app.set_limits(LimitsConfig(max_body_size=int(os.environ.get("UPLOAD_MAX", str(2 * 1024**3)))))
app.set_timeouts(TimeoutConfig(read_body=120, handler=120))
seen_paths: list[str] = []


@app.post("/count")
async def count(request):
    n, digest, chunks = 0, hashlib.sha256(), 0
    async for chunk in request.stream():
        n += len(chunk)
        chunks += 1
        digest.update(chunk)
    path = request._spool_path()
    if path:
        seen_paths.append(path)
    return {"bytes": n, "sha256": digest.hexdigest(), "spooled": path is not None}


@app.post("/body")
def whole(request):
    data = request.body()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@app.get("/spool-files")
def spool_files(request):
    return {"existing": [p for p in seen_paths if os.path.exists(p)], "seen": len(seen_paths)}


if __name__ == "__main__":
    app.run()
