"""Loom, the composition root: lifecycle, ownership of tasks, current(), run()."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

import loom
from loom import Event, Loom, NoRuntime, QoS, RuntimeStopped, UsageError


async def test_start_stop_are_idempotent_and_states_are_explicit():
    rt = Loom(name="a")
    assert rt.state == "created"
    assert await rt.start() is rt and await rt.start() is rt
    assert rt.running and loom.current() is rt
    await rt.stop()
    await rt.stop()
    assert rt.state == "stopped" and not rt.running
    with pytest.raises(UsageError, match="create a new Loom"):
        await rt.start()


async def test_async_with_starts_and_stops():
    async with Loom() as rt:
        assert rt.running
    assert rt.state == "stopped"


async def test_current_is_the_latest_running_runtime_and_raises_when_none():
    with pytest.raises(NoRuntime, match="no Loom runtime is running"):
        loom.current()
    async with Loom(name="outer") as outer:
        async with Loom(name="inner") as inner:
            assert loom.current() is inner
        assert loom.current() is outer
    with pytest.raises(NoRuntime):
        loom.current()


async def test_two_runtimes_do_not_see_each_other():
    async with Loom() as a, Loom() as b:
        sub = a.bus.subscribe("x")
        assert await b.bus.publish("x", Event("t")) == 0
        assert await a.bus.publish("x", Event("t")) == 1
        assert sub.qsize() == 1


async def test_nothing_remains_after_stop_even_after_heavy_use():
    before = asyncio.all_tasks()
    rt = await Loom().start()
    bus = rt.bus
    counted = 0

    def count(topic, event):
        nonlocal counted
        counted += 1

    bus.subscribe("load.>", callback=count, qos=QoS.BACKGROUND)
    rt_sub = bus.subscribe("load.*", qos=QoS.REALTIME)
    consumers = []
    for cycle in range(5):  # several subscribe/close cycles with live consumers
        sub = bus.subscribe("load.x", maxsize=64)

        async def drain(s=sub):
            async for _ in s:
                pass

        consumers.append(rt.spawn(drain(), name=f"test.drain:{cycle}"))
        for i in range(2000):
            await bus.publish("load.x", Event("tick", str(i).encode()))
        sub.close()
    assert bus.stats().published == 10_000
    await rt.stop()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()
    assert bus.subscriptions() == [] and rt_sub.closed and all(c.done() for c in consumers)
    assert counted > 0
    with pytest.raises(RuntimeStopped):
        rt.spawn(asyncio.sleep(1), name="late")


async def test_spawned_tasks_are_named_owned_and_cancelled_on_stop():
    rt = await Loom().start()
    forever = rt.spawn(asyncio.sleep(3600), name="loom.test.forever")
    assert forever in rt.tasks and forever.get_name() == "loom.test.forever"
    await rt.stop()
    assert forever.cancelled()


async def test_a_failing_task_is_logged_not_lost(caplog):
    async with Loom() as rt:

        async def boom():
            raise ValueError("kaput")

        t = rt.spawn(boom(), name="loom.test.boom")
        await asyncio.wait([t])
        await asyncio.sleep(0)
    assert any("loom.test.boom" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_run_inside_a_running_loop_schedules_and_returns_a_task():
    seen = []

    async def main(rt):
        seen.append(rt.running)
        return 42

    task = loom.run(main, name="in-loop")
    assert isinstance(task, asyncio.Task)
    assert await task == 42 and seen == [True]


def test_run_in_a_script_blocks_and_returns_the_result():
    code = (
        "import loom\n"
        "async def main(rt):\n"
        "    sub = rt.bus.subscribe('a.*')\n"
        "    await rt.bus.publish('a.b', loom.Event('t', b'x'))\n"
        "    return (await sub.get()).event.payload\n"
        "print(loom.run(main))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "b'x'"


def test_run_rejects_a_non_callable():
    with pytest.raises(UsageError, match="async function"):
        loom.run(42)


def test_loom_rejects_a_bad_name():
    with pytest.raises(UsageError):
        Loom(name="")
