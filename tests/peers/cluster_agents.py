"""Agents for ``loom worker`` in the cluster tests and bench/cluster.py (loaded as module:attribute).

``slow``: handles ``work.in.*`` events taking ``$LOOM_WORK_MS`` ms each (default 5) and reports each
one on ``work.done`` (JSON: the event id and its worker's pid), so a test can check that each event was
handled once across a queue group. ``cpu``: the same, but burning the CPU instead of sleeping.
"""

from __future__ import annotations

import asyncio
import os
import time

import loom

_PID = str(os.getpid())
_WORK_S = float(os.environ.get("LOOM_WORK_MS", "5")) / 1000


async def _slow(ctx, topic, event):
    if _WORK_S:
        await asyncio.sleep(_WORK_S)
    await ctx.emit("work.done", {"id": event.id, "pid": _PID}, type="work.done")


async def _cpu(ctx, topic, event):
    end = time.perf_counter() + _WORK_S
    while time.perf_counter() < end:
        pass
    await ctx.emit("work.done", {"id": event.id, "pid": _PID}, type="work.done")


def slow() -> loom.Agent:
    return loom.Agent("slow", topics=["work.in.*"], on_event=_slow, mailbox_size=64)


def cpu() -> loom.Agent:
    return loom.Agent("cpu", topics=["work.in.*"], on_event=_cpu, mailbox_size=64)


def background() -> loom.Agent:
    """``slow`` on ``bg.in.*`` with a BACKGROUND mailbox: durable in a cluster, no flag needed."""
    return loom.Agent("bg", topics=["bg.in.*"], on_event=_slow, mailbox_size=64, qos=loom.QoS.BACKGROUND)
