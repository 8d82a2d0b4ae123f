"""Streaming uploads: `python examples/uploads/app.py`, then
`curl --data-binary @bigfile http://127.0.0.1:8000/upload`."""

import hashlib

from cello import App, LimitsConfig

app = App()
app.set_limits(LimitsConfig(max_body_size=4 * 1024**3))  # bodies above 1 MiB are spooled to disk


@app.post("/upload")
async def upload(request):
    size, digest = 0, hashlib.sha256()
    async for chunk in request.stream():
        size += len(chunk)
        digest.update(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


if __name__ == "__main__":
    app.run()
