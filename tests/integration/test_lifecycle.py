"""Issue 2, item 8: app.run() serves with one worker, also from a non-main thread; startup and
shutdown hooks (sync and async) run exactly once."""

import signal
import socket
import subprocess
import threading
import time
from collections import Counter

import httpx
import pytest

pytestmark = pytest.mark.timeout(40)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_startup_and_shutdown_hooks_run_once(serve, tmp_path):
    hook_file = tmp_path / "hooks.log"
    server = serve("hooks_app", env={"CELLO_TEST_HOOK_FILE": str(hook_file)}, fresh=True)

    # Startup hooks completed before the first request is served.
    resp = httpx.get(server.url("/events"), timeout=5)
    assert resp.status_code == 200
    assert Counter(resp.json()["events"]) == Counter({"startup-sync": 1, "startup-async": 1})
    for _ in range(5):
        assert httpx.get(server.url("/events"), timeout=5).status_code == 200

    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server did not exit within 15 s of SIGTERM\n{server.log()[-3000:]}")
    events = Counter(hook_file.read_text().split())
    assert events == Counter({"startup-sync": 1, "startup-async": 1, "shutdown-sync": 1, "shutdown-async": 1}), (
        f"{events}\n{server.log()[-3000:]}"
    )
    assert code == 0, f"exit code {code} after SIGTERM\n{server.log()[-3000:]}"


def test_sigint_also_runs_shutdown_hooks(serve, tmp_path):
    hook_file = tmp_path / "hooks.log"
    server = serve("hooks_app", env={"CELLO_TEST_HOOK_FILE": str(hook_file)}, fresh=True)
    assert httpx.get(server.url("/events"), timeout=5).status_code == 200
    server.proc.send_signal(signal.SIGINT)
    server.proc.wait(timeout=15)
    events = Counter(hook_file.read_text().split())
    assert events["shutdown-sync"] == 1 and events["shutdown-async"] == 1, events
    assert events["startup-sync"] == 1 and events["startup-async"] == 1, events


def test_run_from_a_non_main_thread():
    """Test suites start the app with app.run() in a background thread of the test process."""
    from cello import App

    app = App()

    @app.get("/hello")
    def hello(request):
        return {"hello": "thread"}

    @app.get("/async")
    async def hello_async(request):
        return {"async": True}

    port = free_port()
    errors = []

    def target():
        try:
            app.run(host="127.0.0.1", port=port)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            errors.append(exc)

    thread = threading.Thread(target=target, name="cello-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not errors:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    assert not errors, f"app.run() in a thread raised {errors[0]!r}"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        for _ in range(3):
            assert client.get("/hello").json() == {"hello": "thread"}
        assert client.get("/async").json() == {"async": True}
        assert client.get("/nope").status_code == 404
    assert thread.is_alive(), "app.run() returned while it should be serving"
