"""Large request bodies for tests/integration/test_uploads.py (max_body_size 2 GiB).

Env: UPLOAD_MAX (body limit), FORM_PARTS / FORM_FIELD / FORM_FILE (multipart limits)."""

import hashlib
import os

from cello import App, LimitsConfig, TimeoutConfig

app = App()
form_limits = {
    key: int(os.environ[var])
    for key, var in (("max_form_parts", "FORM_PARTS"), ("max_form_field_size", "FORM_FIELD"),
                     ("max_form_file_size", "FORM_FILE"))
    if var in os.environ
}  # fmt: skip
app.set_limits(LimitsConfig(max_body_size=int(os.environ.get("UPLOAD_MAX", str(2 * 1024**3))), **form_limits))
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


@app.post("/form")
def form(request):
    """Every part of a multipart body; with ?save_dir= the files are saved there (under a
    name of the app's choosing: the client's filename is never a path)."""
    save_dir = request.query.get("save_dir")
    files = []
    for i, (field, up) in enumerate((k, f) for k in request.files() for f in request.files_list(k)):
        info = {
            "field": field,
            "filename": up.filename,
            "content_type": up.content_type,
            "size": up.size(),
            "extension": up.extension(),
            "spooled": up.spooled,
        }
        if up._path:
            seen_paths.append(up._path)
        if save_dir:
            target = os.path.join(save_dir, f"upload-{i}")
            info["saved"] = up.save(target)
            with open(target, "rb") as f:
                info["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
        else:
            info["sha256"] = hashlib.sha256(up.read()).hexdigest()
            info["text_len"] = len(up.read_text(errors="replace"))
        files.append(info)
    return {"fields": dict(request.form()), "files": files}


@app.get("/spool-files")
def spool_files(request):
    return {"existing": [p for p in seen_paths if os.path.exists(p)], "seen": len(seen_paths)}


if __name__ == "__main__":
    app.run()
