"""Stepping through a recorded session: pause, step, resume, and the ReplayPanel's buttons."""

from __future__ import annotations

import asyncio
import time

import loom
from loom.store import ReplayControl

from .conftest import until


async def _record(path, n: int, gap: float = 0.0) -> None:
    async with loom.Loom(record=path, native_tools=()) as rt:
        for i in range(n):
            await rt.bus.publish(f"demo.{i % 2}", loom.Event.from_json("tick", {"i": i}))
            if gap:
                await asyncio.sleep(gap)


async def test_a_paused_replay_publishes_nothing_until_stepped_then_resumes(tmp_path):
    path = tmp_path / "s.db"
    await _record(path, 10)
    async with loom.Loom(native_tools=()) as rt:
        sub = rt.bus.subscribe("demo.>")
        control = ReplayControl(paused=True)
        task = asyncio.ensure_future(rt.replay(path, speed="max", control=control))
        await asyncio.sleep(0.2)
        assert sub.qsize() == 0 and control.paused and control.events == 0
        control.step()
        await until(lambda: sub.qsize() == 1)
        control.step(3)
        await until(lambda: sub.qsize() == 4)
        await asyncio.sleep(0.1)
        assert sub.qsize() == 4 and control.paused and control.position == 4
        control.resume()
        summary = await task
        assert summary.events == 10 and sub.qsize() == 10 and control.done
        assert [sub.get_nowait()[1].json()["i"] for _ in range(10)] == list(range(10))
        sub.close()


async def test_pausing_in_time_holds_the_replay_and_resuming_keeps_the_gaps_from_there(tmp_path):
    path = tmp_path / "s.db"
    await _record(path, 6, gap=0.1)
    async with loom.Loom(native_tools=()) as rt:
        sub = rt.bus.subscribe("demo.>")
        control = ReplayControl()
        started = time.perf_counter()
        task = asyncio.ensure_future(rt.replay(path, speed=1.0, control=control))
        await until(lambda: sub.qsize() >= 2, timeout=5)
        control.pause()
        held = sub.qsize()
        await asyncio.sleep(0.4)
        assert sub.qsize() == held  # nothing while paused
        control.resume()
        await task
        took = time.perf_counter() - started
        assert sub.qsize() == 6 and took >= 0.4 + 0.3  # the pause, plus the gaps still to come after it
        sub.close()


async def test_the_replay_panel_buttons_pause_step_and_play(tmp_path):
    path = tmp_path / "s.db"
    await _record(path, 5)
    async with loom.Loom(native_tools=()) as rt:
        sub = rt.bus.subscribe("demo.>")
        panel = loom.ReplayPanel(path, rt, speed="max", paused=True)
        await asyncio.sleep(0.1)
        assert panel.state == "paused" and panel.events == 0
        panel._on_front_end(panel, {"cmd": "step"}, [])  # what the Step button sends
        await until(lambda: sub.qsize() == 1)
        panel.flush()
        assert panel.events == 1 and panel.position == 1
        panel._on_front_end(panel, {"cmd": "play"}, [])
        await until(lambda: panel.control.done)
        panel.flush()
        assert panel.state == "done" and panel.events == 5 and panel.recent and "demo." in panel._repr_html_()
        panel.close()
        sub.close()
