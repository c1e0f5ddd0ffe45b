"""Shared fixtures: a started runtime that must leave nothing behind."""

from __future__ import annotations

import asyncio

import pytest

import loom


@pytest.fixture
async def rt():
    """A running Loom; after the test it is stopped and must not leak a task."""
    before = asyncio.all_tasks()
    runtime = await loom.Loom(name="test").start()
    try:
        yield runtime
    finally:
        await runtime.stop()
        # A few loop turns: openai's SSE stream leaves an inner async generator suspended after
        # [DONE], and the loop finalizes it in a task of its own (async_generator_athrow), which
        # needs a turn or two to finish. Those are the loop's, not the runtime's.
        for _ in range(5):
            await asyncio.sleep(0)
        leaked = {t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()}
        assert not leaked, f"tasks leaked by the runtime: {[t.get_name() for t in leaked]}"
        assert runtime.bus.subscriptions() == []


@pytest.fixture
async def bus():
    """A standalone EventBus, closed after the test."""
    b = loom.EventBus()
    try:
        yield b
    finally:
        await b.aclose()


@pytest.fixture
def server():
    """A scripted OpenAI-compatible server on 127.0.0.1 (tests/peers/scripted_openai.py), stopped after the test."""
    from tests.peers.scripted_openai import ScriptedOpenAI

    srv = ScriptedOpenAI().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def collector():
    """Telemetry on for one test (process-wide, as OpenTelemetry is), off again afterwards."""
    import loom.telemetry

    col = loom.telemetry.init_telemetry()
    col.clear()
    try:
        yield col
    finally:
        loom.telemetry.disable_telemetry()


def _virtual_audio(settle_s: float):
    from tests.peers.virtual_audio import VirtualAudio, missing

    if (reason := missing()) is not None:
        pytest.skip(reason)
    va = VirtualAudio().start(settle_s=settle_s)
    try:
        yield va
    finally:
        va.stop()


@pytest.fixture
def virtual_audio():
    """A private PulseAudio (tests/peers/virtual_audio.py): the virtual microphone and a speaker
    sink (the default output), for playback."""
    yield from _virtual_audio(0.0)


@pytest.fixture
def virtual_mic():
    """The same, settled for capture: a recording made earlier loses its first 1.5-2 s."""
    yield from _virtual_audio(2.5)


async def drain(sub: loom.Subscription) -> list[loom.Delivery]:
    """Everything queued in ``sub`` right now, without waiting."""
    out = []
    while sub.qsize():
        out.append(sub.get_nowait())
    return out


async def until(cond, timeout: float = 2.0) -> None:
    """Wait until ``cond()`` holds (the one polling helper: for counters that have no event)."""
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - polls plain counters; bounded by the timeout
            await asyncio.sleep(0.001)
