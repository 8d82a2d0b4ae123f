"""Issue 10 item 9 without Python middleware: the runtime's own exception mapping (sync and
async `@app.exception_handler`, MRO, `HTTPException` headers, `ProblemDetails` returned and
raised), with CORS on so the mapped answers pass back out through the Rust layers."""

import asyncio

from cello import App, HTTPException, ProblemDetails, Response

app = App()
app.enable_cors(origins=["https://app.example.com"])


class AppError(Exception):
    pass


class NotFoundError(AppError):
    pass


class GoneError(NotFoundError):
    pass


class LaterError(Exception):
    pass


@app.exception_handler(AppError)
def app_error(request, exc):
    return ProblemDetails("https://errors.example/app", "App error", 409, detail=str(exc))


@app.exception_handler(NotFoundError)
def not_found(request, exc):
    response = Response.json({"missing": str(exc)}, status=404)
    response.set_header("X-Mapped", type(exc).__name__)
    return response


@app.exception_handler(LaterError)
async def later(request, exc):
    await asyncio.sleep(0)
    return {"later": str(exc)}, 503, {"Retry-After": "7"}


@app.get("/base")
def base(request):
    raise AppError("base")


@app.get("/sub")
def sub(request):
    raise NotFoundError("sub")


@app.get("/subsub")
async def subsub(request):
    raise GoneError("gone")  # nearest in the MRO: NotFoundError's handler


@app.get("/later")
def later_route(request):
    raise LaterError("soon")


@app.get("/http")
def http_exc(request):
    raise HTTPException(429, "slow down", headers={"Retry-After": "3", "X-Why": "quota"})


@app.get("/http-async")
async def http_exc_async(request):
    raise HTTPException(status=401, detail="who are you", headers={"WWW-Authenticate": "Bearer"})


@app.get("/problem-value")
def problem_value(request):
    return ProblemDetails(None, "Out of credit", 402, detail="balance 0").with_extension("balance", 0)


@app.get("/problem-raised")
async def problem_raised(request):
    raise ProblemDetails("https://errors.example/gone", "Gone", 410, detail="moved away")


@app.get("/ok")
def ok(request):
    return {"ok": True}


if __name__ == "__main__":
    app.run()
