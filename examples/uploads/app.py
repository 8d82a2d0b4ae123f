"""Streaming uploads: `python examples/uploads/app.py`, then
`curl --data-binary @bigfile http://127.0.0.1:8000/upload` or
`curl -F title=notes -F doc=@bigfile http://127.0.0.1:8000/files`."""

import hashlib
import tempfile
import uuid
from pathlib import Path

from cello import App, LimitsConfig

app = App()
# Bodies above 1 MiB are spooled to disk; so are file parts above 1 MiB.
app.set_limits(LimitsConfig(max_body_size=4 * 1024**3, max_form_parts=20, max_form_field_size=64 * 1024))
UPLOADS = Path(tempfile.gettempdir()) / "cello-example-uploads"


@app.post("/upload")
async def upload(request):
    size, digest = 0, hashlib.sha256()
    async for chunk in request.stream():
        size += len(chunk)
        digest.update(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


@app.post("/files")
def files(request):
    UPLOADS.mkdir(exist_ok=True)
    saved = []
    for field, up in request.files().items():
        # The client's filename is only reported, never used as a path.
        target = UPLOADS / f"{uuid.uuid4()}.{up.extension() or 'bin'}"
        up.save(target)
        saved.append({"field": field, "filename": up.filename, "size": up.size(), "saved_as": str(target)})
    return {"fields": dict(request.form()), "files": saved}


if __name__ == "__main__":
    app.run()
