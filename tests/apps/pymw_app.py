"""Issue 10 items 9 and 12: exception mapping (sync and async handlers, MRO, HTTPException,
ProblemDetails as value and exception) and Python middleware (sync and async, short-circuit,
request context, response changes)."""

import asyncio

from cello import App, HTTPException, ProblemDetails, Response

app = App()
app.enable_cors(origins=["https://app.example.com"])


class AppError(Exception):
    pass


class NotFoundError(AppError):
    pass


class Teapot(NotFoundError):
    pass


class SlowError(Exception):
    pass


@app.exception_handler(AppError)
def app_error(request, exc):
    return ProblemDetails("https://errors.example/app", "App error", 409, detail=str(exc))


@app.exception_handler(NotFoundError)
def not_found(request, exc):
    return Response.json({"missing": str(exc)}, status=404)


@app.exception_handler(SlowError)
async def slow_error(request, exc):
    await asyncio.sleep(0)
    return {"slow": str(exc)}, 503


@app.use
def timing(request, call_next):
    if request.headers.get("x-block") == "1":
        return Response.json({"blocked": True}, status=403)
    request.set_context("seen_by", ["sync"])
    response = call_next(request)
    response.set_header("X-Sync-MW", "1")
    return response


@app.middleware
async def tagging(request, call_next):
    request.context["seen_by"].append("async")
    if request.path == "/short-async":
        return {"short": "async"}
    response = await call_next(request)
    response.set_header("X-Async-MW", str(response.status))
    return response


@app.get("/ctx")
def ctx(request):
    return {"seen_by": request.context["seen_by"]}


@app.get("/ctx-async")
async def ctx_async(request):
    await asyncio.sleep(0)
    return {"seen_by": request.context["seen_by"]}


@app.get("/short-async")
def short_async(request):
    raise AssertionError("the async middleware answers before the handler")


@app.get("/plain")
def plain(request):
    return "text"


@app.get("/base")
def base(request):
    raise AppError("base")


@app.get("/sub")
async def sub(request):
    raise NotFoundError("sub")


@app.get("/subsub")
def subsub(request):
    raise Teapot("tea")  # nearest handler in the MRO: NotFoundError's


@app.get("/slow")
def slow(request):
    raise SlowError("later")


@app.get("/http")
def http_exc(request):
    raise HTTPException(418, "short and stout", headers={"X-Tea": "1"})


@app.get("/problem-value")
def problem_value(request):
    return ProblemDetails(None, "Out of credit", 402, detail="balance 0").with_extension("balance", 0)


@app.get("/problem-raised")
async def problem_raised(request):
    raise ProblemDetails("https://errors.example/gone", "Gone", 410, detail="moved away")


if __name__ == "__main__":
    app.run()
