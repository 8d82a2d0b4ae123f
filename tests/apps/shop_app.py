"""examples/shop served for the end-to-end test. ``SHOP_CRASH_AFTER=<step>``: the process
kills itself with SIGKILL right after that step of an order saga is persisted as completed
(between two steps), to prove the saga resumes on the next start."""

import importlib.util
import os
import signal
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "shop_example", Path(__file__).resolve().parents[2] / "examples/shop/app.py"
)
shop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shop)
app = shop.app

crash_after = os.environ.get("SHOP_CRASH_AFTER")
if crash_after:

    def crash(execution):
        statuses = {s["name"]: s["status"] for s in execution.steps}
        names = [s["name"] for s in execution.steps]
        nxt = names[names.index(crash_after) + 1]
        if statuses[crash_after] == "completed" and statuses[nxt] == "pending":
            os.kill(os.getpid(), signal.SIGKILL)

    shop.sagas.add_listener(crash)

if __name__ == "__main__":
    app.run()
