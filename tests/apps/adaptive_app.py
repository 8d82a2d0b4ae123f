"""Adaptive offload (issue 9 item 6, last bullet): `/work?ms=N` sleeps N ms and says whether
it ran on the event loop's thread (inline) or in the pool. Prometheus is on."""

import threading
import time

from cello import App

app = App()
app.enable_prometheus()


@app.get("/work")
def work(request):
    ms = int(request.query.get("ms", "0"))
    if ms:
        time.sleep(ms / 1000)
    return {"inline": threading.current_thread() is threading.main_thread()}


if __name__ == "__main__":
    app.run()
