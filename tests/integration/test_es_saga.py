"""Sagas: steps, retries with backoff, timeouts, reverse compensation, persisted state, and
resume-or-compensate after SIGKILL (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from cello.config import SagaConfig
from cello.saga import Saga, SagaError, SagaExecution, SagaOrchestrator, SagaResult, SagaStep, StepStatus
from es_helpers import BACKENDS, Env, Loop

FAST = SagaConfig(max_retries=2, retry_delay_ms=10, timeout_ms=10_000, enable_logging=False)


@pytest.fixture(scope="module")
def loop():
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(params=BACKENDS)
def env(request, tmp_path, loop):
    e = Env(request.param, tmp_path, loop)
    yield e
    e.teardown()


def recorder():
    calls: list[str] = []

    def step(name, fail_times=0, result=None):
        state = {"n": 0}

        async def action(ctx):
            calls.append(name)
            state["n"] += 1
            if state["n"] <= fail_times:
                raise RuntimeError(f"{name} failed #{state['n']}")
            return result

        return action

    def undo(name, fail=False):
        def compensate(ctx):  # sync on purpose: runs in a thread
            calls.append(f"undo-{name}")
            if fail:
                raise RuntimeError(f"cannot undo {name}")

        return compensate

    return calls, step, undo


def test_saga_completes_and_state_is_persisted_after_every_step(env):
    calls, step, undo = recorder()
    saga = Saga("s1", [SagaStep("a", step("a", result={"a_id": 1}), undo("a")),
                       SagaStep("b", step("b", result="B"), undo("b"))])  # fmt: skip

    async def go():
        orch = await env.orchestrator(FAST)
        orch.register(saga)
        seen = []
        orch.add_listener(lambda ex: seen.append([s["status"] for s in ex.steps]))
        result = await orch.execute("s1", {"order": 7})
        assert isinstance(result, SagaResult) and result.success and result.status == "completed"
        assert result.context == {"order": 7, "a_id": 1, "b": "B"}
        assert calls == ["a", "b"]
        # Persisted before and after each step.
        assert ["running", "pending"] in seen and ["completed", "pending"] in seen
        assert ["completed", "running"] in seen and seen[-1] == ["completed", "completed"]
        stored = await orch.get_execution(result.execution_id)
        assert stored.status == "completed" and stored.context["a_id"] == 1
        assert [s["status"] for s in stored.steps] == [StepStatus.COMPLETED, StepStatus.COMPLETED]
        listed = await orch.list_executions()
        assert result.execution_id in [e.execution_id for e in listed]
        assert [e.execution_id for e in await orch.list_executions("completed")] == [result.execution_id]
        assert await orch.list_executions("compensated") == []

    env.loop.run(go())


def test_failure_compensates_completed_steps_in_reverse_order(env):
    calls, step, undo = recorder()
    saga = Saga("s2", [SagaStep("a", step("a"), undo("a")), SagaStep("b", step("b"), undo("b")),
                       SagaStep("c", step("c", fail_times=99), undo("c"), retries=0)])  # fmt: skip

    async def go():
        orch = await env.orchestrator(FAST)
        result = await orch.execute(saga, {})
        assert not result.success and result.status == "compensated"
        assert "step 'c' failed" in result.error and "RuntimeError" in result.error
        assert calls == ["a", "b", "c", "undo-b", "undo-a"]
        stored = await orch.get_execution(result.execution_id)
        assert [s["status"] for s in stored.steps] == ["compensated", "compensated", "failed"]

    env.loop.run(go())


def test_steps_are_retried_with_backoff(env):
    calls, step, undo = recorder()
    saga = Saga("s3", [SagaStep("flaky", step("flaky", fail_times=2))])

    async def go():
        orch = await env.orchestrator(SagaConfig(max_retries=2, retry_delay_ms=100, enable_logging=False))
        t = time.monotonic()
        result = await orch.execute(saga)
        took = time.monotonic() - t
        assert result.success and calls == ["flaky"] * 3
        assert took >= 0.1 + 0.2  # 100 ms, then 200 ms
        assert result.steps[0]["attempts"] == 3
        # Retries exhausted: max_retries=1 means two attempts, then compensation.
        calls.clear()
        orch2 = await env.orchestrator(SagaConfig(max_retries=1, retry_delay_ms=1, enable_logging=False))
        again = Saga("s3b", [SagaStep("flaky", step("flaky", fail_times=5))])
        r = await orch2.execute(again)
        assert r.status == "compensated" and calls == ["flaky", "flaky"]

    env.loop.run(go())


def test_step_retries_override_and_saga_error_is_not_retried(env):
    calls, step, undo = recorder()

    async def permanent(ctx):
        calls.append("perm")
        raise SagaError("card declined")

    saga = Saga("s4", [SagaStep("once", step("once", fail_times=1), retries=3), SagaStep("perm", permanent)])

    async def go():
        orch = await env.orchestrator(SagaConfig(max_retries=0, retry_delay_ms=1, enable_logging=False))
        r = await orch.execute(saga)
        assert calls == ["once", "once", "perm"]
        assert r.status == "compensated" and "card declined" in r.error

    env.loop.run(go())


def test_per_step_timeout(env):
    async def slow(ctx):
        await asyncio.sleep(10)

    undone = []
    saga = Saga("s5", [SagaStep("first", lambda ctx: None, lambda ctx: undone.append(1)),
                       SagaStep("slow", slow, timeout=0.05, retries=1)])  # fmt: skip

    async def go():
        orch = await env.orchestrator(FAST)
        t = time.monotonic()
        r = await orch.execute(saga)
        assert time.monotonic() - t < 5
        assert r.status == "compensated" and "timed out" in r.error and undone == [1]
        assert r.steps[1]["attempts"] == 2

    env.loop.run(go())


def test_saga_timeout(env):
    async def slow(ctx):
        await asyncio.sleep(0.2)

    saga = Saga("s5b", [SagaStep(f"s{i}", slow) for i in range(10)])

    async def go():
        orch = await env.orchestrator(SagaConfig(max_retries=0, timeout_ms=300, enable_logging=False))
        r = await orch.execute(saga)
        assert r.status == "compensated" and "timed out" in r.error

    env.loop.run(go())


def test_failing_compensation_is_recorded_and_reported(env):
    calls, step, undo = recorder()
    saga = Saga("s6", [SagaStep("a", step("a"), undo("a")), SagaStep("b", step("b"), undo("b", fail=True)),
                       SagaStep("c", step("c", fail_times=9), retries=0)])  # fmt: skip

    async def go():
        orch = await env.orchestrator(SagaConfig(max_retries=1, retry_delay_ms=1, enable_logging=False))
        orch.register(saga)
        r = await orch.execute(saga)
        assert not r.success and r.status == "compensation_failed"
        assert "cannot undo b" in r.compensation_errors["b"]
        # b's compensation retried once; a still compensated after it.
        assert calls == ["a", "b", "c", "undo-b", "undo-b", "undo-a"]
        stored = await orch.get_execution(r.execution_id)
        assert stored.status == "compensation_failed"
        assert (
            stored.steps[1]["status"] == "compensation_failed"
            and "cannot undo" in stored.steps[1]["compensation_error"]
        )
        # Retry (the dashboard button) re-runs only the failed compensation.
        saga.steps[1].compensate = lambda ctx: calls.append("undo-b-fixed")
        r2 = await orch.retry(r.execution_id)
        assert r2.status == "compensated" and calls[-1] == "undo-b-fixed"

    env.loop.run(go())


def test_saga_api_shapes():
    s = SagaStep("x", lambda c: None, compensate=None, timeout=None, retries=None)
    assert s.name == "x" and s.timeout is None and s.retries is None and not s.idempotent
    with pytest.raises(ValueError):
        SagaStep("x", lambda c: None, timeout=0)
    with pytest.raises(ValueError):
        Saga("dup", [SagaStep("a", print), SagaStep("a", print)])
    with pytest.raises(TypeError):
        SagaOrchestrator({"max_retries": 1})
    ex = SagaExecution(Saga("solo", [SagaStep("a", lambda c: {"x": 1})]))
    r = asyncio.run(ex.run({"y": 2}))
    assert r.success and r.context == {"y": 2, "x": 1}
    assert StepStatus.COMPLETED == "completed"

    async def unknown():
        await SagaOrchestrator().execute("nope")

    with pytest.raises(SagaError, match="no saga registered"):
        asyncio.run(unknown())


# ---- crash and resume (SIGKILL) ---------------------------------------------------------------

CRASHER = textwrap.dedent(
    """
    import asyncio, os, signal, sys, time
    from cello.config import SagaConfig
    from cello.saga import Saga, SagaOrchestrator, SagaStep

    url, prefix, log, mode, phase = sys.argv[1:6]

    def note(text):
        with open(log, "a") as f:
            f.write(text + "\\n")
            f.flush()
            os.fsync(f.fileno())

    def kill():
        os.kill(os.getpid(), signal.SIGKILL)

    async def a(ctx):
        note("a")
        return {{"a": 1}}

    async def b(ctx):
        note("b")
        if phase == "first" and mode in ("during", "during-idempotent"):
            kill()
        return {{"b": 1}}

    async def c(ctx):
        note("c")

    saga = Saga("crashy", [
        SagaStep("a", a, lambda ctx: note("undo-a")),
        SagaStep("b", b, lambda ctx: note("undo-b"), idempotent=(mode == "during-idempotent")),
        SagaStep("c", c, lambda ctx: note("undo-c")),
    ])

    async def main():
        orch = await SagaOrchestrator.connect(SagaConfig(retry_delay_ms=1, enable_logging=False), url=url,
                                              table_prefix=prefix, lease_secs=0.5)
        orch.register(saga)
        if phase == "first":
            if mode == "between":
                def maybe_kill(ex):
                    if [s["status"] for s in ex.steps] == ["completed", "pending", "pending"]:
                        kill()
                orch.add_listener(maybe_kill)
            await orch.execute("crashy", {{"order": 1}}, execution_id="exec-1")
            note("finished-first")
        else:
            # The dead process's lease runs out first (0.5 s), then this one takes over.
            results, deadline = [], time.monotonic() + 30
            while not results and time.monotonic() < deadline:
                results = await orch.resume_pending()
                await asyncio.sleep(0.05)
            for r in results:
                note("resumed " + r.status)

    asyncio.run(main())
    """
)


def run_phase(env, log, mode, phase):
    script = CRASHER.format()
    p = subprocess.run(
        [sys.executable, "-c", script, env.url, env.prefix, str(log), mode, phase],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return p


@pytest.mark.parametrize(
    ("mode", "expected_log", "final"),
    [
        ("between", ["a", "b", "c", "resumed completed"], "completed"),
        ("during", ["a", "b", "undo-b", "undo-a", "resumed compensated"], "compensated"),
        ("during-idempotent", ["a", "b", "b", "c", "resumed completed"], "completed"),
    ],
)
def test_sigkill_mid_saga_then_resume_or_compensate(env, tmp_path, mode, expected_log, final):
    if env.backend == "memory":
        pytest.skip("a memory saga store dies with the process; resume needs SQLite or PostgreSQL")
    log = tmp_path / "log.txt"
    first = run_phase(env, log, mode, "first")
    assert first.returncode == -9, first.stderr  # killed by SIGKILL
    assert "finished-first" not in log.read_text()
    second = run_phase(env, log, mode, "second")
    assert second.returncode == 0, second.stderr
    assert log.read_text().split("\n")[:-1] == expected_log

    async def check():
        orch = await env.orchestrator()
        ex = await orch.get_execution("exec-1")
        return ex.status, ex.context

    status, context = env.loop.run(check())
    assert status == final and context["order"] == 1


def shared(env, orch_kwargs):
    """Orchestrators of one store: the same URL, or one memory store object."""
    from cello.saga import MemorySagaStore

    store = MemorySagaStore() if env.backend == "memory" else None

    async def make():
        if store is not None:
            return await SagaOrchestrator.connect(FAST, store=store, **orch_kwargs)
        return await env.orchestrator_with(FAST, **orch_kwargs)

    return make


def test_an_abandoned_execution_is_resumed_by_exactly_one_process(env):
    runs = []

    async def go():
        gate = asyncio.Event()
        reached = asyncio.Event()

        async def b(ctx):
            runs.append("b")
            reached.set()
            await gate.wait()

        saga = Saga("race", [SagaStep("a", lambda c: runs.append("a")), SagaStep("b", b, idempotent=True)])
        make = shared(env, {"lease_secs": 0.3})
        first, second, third = await make(), await make(), await make()
        for o in (first, second, third):
            o.register(saga)
        # The first process "dies" in step b: its task is cancelled, its lease is not renewed.
        task = asyncio.ensure_future(first.execute("race", {}, execution_id=f"r-{uuid.uuid4().hex[:6]}"))
        await reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        # Two others race to resume it once the lease has run out: one wins.
        deadline = time.monotonic() + 10
        results: list = []
        while not results and time.monotonic() < deadline:
            a, b_ = await asyncio.gather(second.resume_pending(), third.resume_pending())
            results = a + b_
            await asyncio.sleep(0.05)
        assert len(results) == 1 and results[0].status == "completed"
        assert runs == ["a", "b", "b"]  # b is idempotent: re-run once after the "crash"

    env.loop.run(go())


def test_a_live_execution_is_not_taken_over(env):
    async def go():
        gate = asyncio.Event()
        reached = asyncio.Event()

        async def slow(ctx):
            reached.set()
            await gate.wait()

        saga = Saga("live", [SagaStep("slow", slow)])
        make = shared(env, {"lease_secs": 0.3})
        owner, other = await make(), await make()
        owner.register(saga)
        other.register(saga)
        task = asyncio.ensure_future(owner.execute("live", {}, execution_id=f"l-{uuid.uuid4().hex[:6]}"))
        await reached.wait()
        # Longer than the lease: the owner's heartbeat keeps it.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert await other.resume_pending() == []
            await asyncio.sleep(0.1)
        gate.set()
        assert (await task).status == "completed"

    env.loop.run(go())
