"""Issue 8 item 6: the executor apart from HTTP. An asyncio program with no server awaits Rust
futures (the loop never blocks) and Rust tasks call back into Python and get the results."""

import asyncio
import threading
import time

import pytest
from cello import _cello

pytestmark = pytest.mark.timeout(60)


def run(main):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


def test_a_thousand_concurrent_rust_sleeps_without_a_server():
    async def main(loop):
        ex = _cello.Executor.start(loop)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = loop.create_task(ticker())
        began = time.monotonic()
        results = await asyncio.gather(*(ex.sleep(0.3, i) for i in range(1000)))
        took = time.monotonic() - began
        t.cancel()
        ex.close()
        return results, took, ticks

    results, took, ticks = run(main)
    assert results == list(range(1000))
    assert 0.3 <= took < 3.0, took  # concurrent, not 1000 x 0.3 s
    assert ticks >= 10, ticks  # the loop kept turning while Rust slept


def test_echo_a_thousand_times_concurrently():
    async def main(loop):
        ex = _cello.Executor.start(loop)
        payloads = [f"payload {i}".encode() * (i % 7 + 1) for i in range(1000)]
        got = await asyncio.gather(*(ex.echo(p) for p in payloads))
        ex.close()
        return payloads, got

    payloads, got = run(main)
    assert got == payloads


def test_the_gil_is_free_while_rust_futures_run():
    # A Python thread counting while the loop awaits Rust sleeps: it must make progress.
    counter = 0
    stop = threading.Event()

    def spin():
        nonlocal counter
        while not stop.is_set():
            counter += 1

    async def main(loop):
        ex = _cello.Executor.start(loop)
        th = threading.Thread(target=spin)
        th.start()
        before = counter
        await asyncio.gather(*(ex.sleep(0.2) for _ in range(100)))
        progressed = counter - before
        stop.set()
        th.join()
        ex.close()
        return progressed

    assert run(main) > 1000


def test_rust_errors_become_python_exceptions():
    async def main(loop):
        ex = _cello.Executor.start(loop)
        with pytest.raises(RuntimeError, match="from rust"):
            await ex.fail("from rust", 0.01)
        with pytest.raises(ValueError):
            ex.sleep(-1)
        ex.close()

    run(main)


def test_cancelling_the_python_future_leaves_the_loop_healthy():
    async def main(loop):
        ex = _cello.Executor.start(loop)
        fut = ex.sleep(10)
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
        assert await ex.sleep(0.01, "after") == "after"
        ex.close()

    run(main)


def test_a_closed_executor_refuses_new_work():
    async def main(loop):
        ex = _cello.Executor.start(loop)
        assert await ex.echo(b"x") == b"x"
        ex.close()
        with pytest.raises(RuntimeError, match="shut down"):
            ex.sleep(0.01)
        ex.close()  # twice is fine

    run(main)


def test_a_rust_task_calls_back_into_python():
    seen = []

    def double(i):
        seen.append((i, threading.current_thread() is threading.main_thread()))
        return i * 2

    async def main(loop):
        ex = _cello.Executor.start(loop)
        out = await ex.call_back(double, 50)
        ex.close()
        return out

    assert run(main) == [i * 2 for i in range(50)]
    # Called in order, on the loop's thread (here the main thread), never on an I/O thread.
    assert seen == [(i, True) for i in range(50)]


def test_a_rust_task_awaits_a_coroutine_on_the_loop():
    async def slow_square(i):
        await asyncio.sleep(0.001)
        return i * i

    async def main(loop):
        ex = _cello.Executor.start(loop)
        many = await asyncio.gather(*(ex.call_back(slow_square, 20) for _ in range(50)))
        ex.close()
        return many

    assert run(main) == [[i * i for i in range(20)]] * 50


def test_a_python_exception_reaches_the_rust_task_and_comes_back():
    def boom(i):
        if i == 3:
            raise KeyError("three")
        return i

    async def main(loop):
        ex = _cello.Executor.start(loop)
        with pytest.raises(KeyError, match="three"):
            await ex.call_back(boom, 10)
        ex.close()

    run(main)


def test_http_runtime_and_executor_share_the_bridge():
    # The TestClient's responses now come back through the same bridge (no GIL on I/O threads).
    from cello import App
    from cello.testing import TestClient

    app = App()

    @app.get("/x")
    def x(request):
        return {"ok": True}

    with TestClient(app) as client:
        for _ in range(200):
            assert client.get("/x").json() == {"ok": True}
