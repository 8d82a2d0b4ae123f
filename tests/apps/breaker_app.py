"""Circuit breaker fixture: /flaky/{id} fails while FAIL is set (toggled over HTTP), /boom
raises, /ok always works; /calls reports how often each handler ran."""

import collections

from cello import App

app = App()
app.enable_circuit_breaker(failure_threshold=3, reset_timeout=1, half_open_target=2)
app.enable_prometheus()
calls: collections.Counter = collections.Counter()
state = {"fail": True}


@app.get("/calls")
def get_calls(request):
    return dict(calls)


@app.post("/fail/{on:int}")
def set_fail(request):
    state["fail"] = bool(int(request.params["on"]))
    return {"fail": state["fail"]}


@app.get("/flaky/{id:int}")
def flaky(request):
    calls["flaky"] += 1
    if state["fail"]:
        return {"error": "down"}, 502
    return {"ok": True}


@app.get("/boom")
def boom(request):
    calls["boom"] += 1
    raise RuntimeError("boom")


@app.get("/ok")
def ok(request):
    calls["ok"] += 1
    return {"ok": True}


if __name__ == "__main__":
    app.run()
