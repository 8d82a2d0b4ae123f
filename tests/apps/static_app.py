"""Static files fixture: two mounts from STATIC_ROOT and STATIC_LISTED (directory listing on),
and a route that holds the GIL, to show static files never need it."""

import math
import os
import re
import time

from cello import App, StaticFilesConfig

app = App()
app.enable_static_files(
    StaticFilesConfig(os.environ["STATIC_ROOT"], prefix="/static", cache_control="public, max-age=60")
)
app.enable_static_files(
    StaticFilesConfig(
        os.environ["STATIC_LISTED"], prefix="/files", directory_listing=True, index_file=None, enable_etag=False
    )
)


def hold_gil(seconds: float) -> None:
    """Hold the GIL for about `seconds` in one C call (the regex engine never releases it)."""
    pattern = re.compile(r"(a+)+$")
    n, took = 14, 0.0
    while took < 0.02:
        n += 1
        start = time.perf_counter()
        pattern.match("a" * n + "b")
        took = time.perf_counter() - start
    n += max(0, round(math.log2(seconds / took)))
    pattern.match("a" * n + "b")


@app.get("/hold-gil")
def hold_gil_route(request):
    marker = request.query.get("marker")
    if marker:
        with open(marker, "w") as f:
            f.write("holding")
    hold_gil(2.0)
    return {"held": True}


@app.get("/sleep")
def sleep_route(request):
    marker = request.query.get("marker")
    if marker:
        with open(marker, "w") as f:
            f.write("sleeping")
    time.sleep(2.0)  # a sync handler blocking the Python thread
    return {"slept": True}


@app.get("/static/python")
def python_route(request):
    return {"python": True}


if __name__ == "__main__":
    app.run()
