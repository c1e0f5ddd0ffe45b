"""Inspector widgets (in-process, no front end): throttling, filters, fallbacks, cleanup."""

from __future__ import annotations

import asyncio
import time

import pytest

import loom
from loom import Agent, Event, NoRuntime, UsageError
from loom.notebook import (
    AgentInspector,
    BusInspector,
    ContextInspector,
    SequenceRecorder,
    Topology,
    TraceTimeline,
    status_of,
)
from tests.conftest import until


def spy_comm(widget) -> list:
    """Record every comm message the widget sends (one per sync)."""
    sent = []
    original = widget._send

    def _send(msg, buffers=None):
        sent.append(msg)
        return original(msg, buffers)

    widget._send = _send
    return sent


async def test_bus_inspector_sends_at_most_ten_messages_per_second_under_load(rt):
    view = BusInspector(rt, max_rows=20)
    initial = view.flushes  # the first, complete view is sent at creation
    sent = spy_comm(view)
    event = Event("tick", b"x")
    start = time.monotonic()
    published = 0
    while time.monotonic() - start < 1.0:  # ~10 000 events per second, in bursts of 100
        for _ in range(100):
            await rt.bus.publish("load.tick", event)
        published += 100
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)
    elapsed = time.monotonic() - start
    assert published >= 5000
    assert len(sent) <= 10 * elapsed + 1, f"{len(sent)} comm messages in {elapsed:.2f}s"
    assert view.flushes - initial == len(sent)  # one message per flush (hold_sync)
    assert view.total == published and len(view.rows) == 20
    assert view.topics[0]["topic"] == "load.tick" and view.topics[0]["rate"] > 0
    view.close()
    assert view._sub.closed


async def test_bus_inspector_is_quiet_when_nothing_happens(rt):
    view = BusInspector(rt)
    sent = spy_comm(view)
    await asyncio.sleep(0.35)
    assert sent == []
    view.close()


async def test_bus_inspector_filters_pause_and_bad_patterns(rt):
    view = BusInspector(rt, max_rows=10)
    for topic, type_ in (("market.price.BTC", "price"), ("news.today", "headline"), ("market.volume.BTC", "volume")):
        await rt.bus.publish(topic, Event(type_, b"{}"))
    view.pattern = "market.>"
    view.flush()
    assert [r["topic"] for r in view.rows] == ["market.volume.BTC", "market.price.BTC"]
    view.types = "price"
    view.flush()
    assert [r["type"] for r in view.rows] == ["price"]
    view.pattern = "market..x"
    assert "segment 2 is empty" in view.error
    view.pattern, view.types = ">", ""
    view.paused = True
    view.flush()
    frozen = list(view.rows)
    await rt.bus.publish("news.later", Event("headline"))
    view.flush()
    assert view.rows == frozen and view.total == 4  # counts go on while paused
    view.paused = False
    view.flush()
    assert view.rows[0]["topic"] == "news.later"
    assert "news.later" in view._repr_html_()
    view.close()


async def test_static_fallback_is_in_the_mimebundle(rt):
    view = AgentInspector(rt)
    bundle = view._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data and "Loom agents" in data["text/html"]
    view.close()


async def test_agent_inspector_syncs_only_on_change(rt):
    view = AgentInspector(rt)
    assert view.flush() is False
    agent = await Agent("a", topics=["t"], on_event=lambda c, t, e: None).start()
    assert view.flush() is True and view.agents[0]["agent_id"] == "a"
    assert view.flush() is False
    await agent.stop()
    view.flush()
    assert view.agents == []
    view.close()


async def test_context_inspector_shows_parts_with_token_estimates(rt):
    @loom.capability("calc.add")
    def add(a: int, b: int) -> int:
        "Add two numbers."
        return a + b

    agent = await Agent("calc", topics=["calc.in"], capabilities=[add]).start()
    view = ContextInspector("calc", rt, budget=1000)
    await rt.bus.publish("calc.in", Event.from_text("q", "what is 2 + 3?"))
    agent.ctx.subscribe("calc.extra")
    view.flush()
    await rt.bus.publish("calc.extra", Event.from_text("q", "followed"))
    view.flush()
    b = view.bundle
    assert "calc.extra" in b["system"] and [m["content"] for m in b["messages"]] == ["what is 2 + 3?", "followed"]
    assert b["tools"][0]["name"] == "calc.add:1.0" and b["tokens"]["tools"] > 0
    assert "of budget" in view._repr_html_()
    view.close()
    custom = ContextInspector("calc", rt, bundle=lambda: {"system": "x" * 400, "messages": [], "tools": []})
    assert custom.bundle["tokens"]["system"] == 100
    custom.close()
    with pytest.raises(UsageError, match="no agent 'ghost'"):
        ContextInspector("ghost", rt)


async def test_trace_timeline_polls_the_collector_in_its_own_task(rt):
    """Spans reach the widget through the inspector's periodic collect, never a listener thread."""
    import loom.telemetry

    collector = loom.telemetry.init_telemetry()
    collector.clear()
    try:
        view = TraceTimeline(rt)  # the process's collector
        sub = rt.bus.subscribe("svc.t")
        await rt.bus.publish("svc.t", Event("x"))
        await until(lambda: any(i["name"] == "publish" for i in view.items), timeout=2)
        assert view.lanes[0]["name"] == "bus"  # the collector has no listener API: the view polls
        sub.close()
        view.close()
    finally:
        loom.telemetry.disable_telemetry()


async def test_topology_counts_edges_and_draws_a_figure(rt):
    async def relay(ctx, topic, event):
        await ctx.emit("out.x", event.payload)

    await Agent("relay", topics=["in.*"], on_event=relay).start()
    view = Topology(rt)
    assert {(e["source"], e["target"], e["events"]) for e in view.edges} == {("topic:in.*", "agent:relay", 0)}
    for _ in range(3):
        await rt.bus.publish("in.a", Event("t"))
    await until(lambda: rt.agents["relay"].handled == 3)
    view.flush()
    edges = {(e["source"], e["target"]): e["events"] for e in view.edges}
    assert edges[("topic:in.*", "agent:relay")] == 3 and edges[("agent:relay", "topic:out.x")] == 3
    assert {n["kind"] for n in view.nodes} == {"agent", "topic"}
    fig = view.figure()
    assert fig.axes and fig.axes[0].get_title()
    view.close()


async def test_sequence_recorder_attributes_receivers(rt):
    async def echo(ctx, topic, event):
        await ctx.reply(ctx.thread(event), b"pong")

    await Agent("srv", topics=["svc.ping"], on_event=echo).start()
    asker = await Agent("asker").start()
    seq = SequenceRecorder(rt)
    await asker.ctx.request(None, "svc.ping", b"ping", timeout_ms=500)
    msgs = seq.messages()
    assert [(m.sender, m.receivers, m.type) for m in msgs] == [
        ("asker", ("srv",), "collab.request"),
        ("srv", ("asker",), "collab.reply"),
    ]
    assert seq.figure("ping").axes
    seq.close()


async def test_inspectors_need_a_runtime_and_a_sane_interval(rt):
    with pytest.raises(UsageError, match="interval"):
        BusInspector(rt, interval=0.001)
    assert status_of(rt)["running"] is True


async def test_inspector_tasks_belong_to_the_runtime():
    async with loom.Loom() as rt:
        view = BusInspector(rt)
        assert any(t.get_name().startswith("loom.notebook.BusInspector") for t in rt.tasks)
    assert view._sub.closed  # the runtime stopped: its subscription is gone too
    with pytest.raises(NoRuntime):
        BusInspector()
