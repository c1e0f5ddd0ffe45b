"""One agent core for both transports: the same behaviour suite runs against an agent in this
runtime and against the same agent joined through the bridge (its core in the SDK's transport,
its link the bridge stream; both ends in this process, on gRPC and on the same-host stream)."""

from __future__ import annotations

import asyncio
import json

import pytest

import loom
from loom import Agent, ClosedError, Event, Loom, NoSubscribers, RestartPolicy
from tests.conftest import until


@pytest.fixture(params=["in-process", "bridge-local", "bridge-grpc"])
async def place(request, tmp_path, monkeypatch):
    """(rt, make): ``make(...)`` starts an Agent in ``rt`` or, for the bridge kinds, through rt's bridge."""
    monkeypatch.setenv("LOOM_BRIDGE_LOCAL", "0" if request.param == "bridge-grpc" else "1")
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        address = None
        if request.param != "in-process":
            server = await rt.start_bridge(port=0)
            address = f"127.0.0.1:{server.port}"
        started: list[Agent] = []

        async def make(agent_id: str, topics=(), on_event=None, **kw) -> Agent:
            where = {"address": address} if address else {"runtime": rt}
            agent = await Agent(agent_id, topics=topics, on_event=on_event, **where, **kw).start()
            started.append(agent)
            return agent

        yield rt, make
        for agent in started:
            await agent.stop()


async def test_events_are_handled_one_at_a_time_in_order(place):
    rt, make = place
    seen, active, overlap = [], [0], [False]

    async def handler(ctx, topic, event):
        active[0] += 1
        overlap[0] |= active[0] > 1
        await asyncio.sleep(0)
        seen.append(event.payload)
        active[0] -= 1

    agent = await make("orderly", ["work.*"], handler)
    for i in range(50):
        await rt.bus.publish(f"work.{i % 3}", Event("n", str(i).encode()))
    await until(lambda: len(seen) == 50, timeout=5)
    assert seen == [str(i).encode() for i in range(50)] and not overlap[0]
    assert agent.core.handled == 50


async def test_an_event_matching_two_patterns_is_handled_once(place):
    rt, make = place
    seen = []
    await make("twice", ["market.price.*", "market.>"], lambda ctx, topic, event: seen.append(topic))
    await rt.bus.publish("market.price.BTC", Event("tick", b"1"))
    await rt.bus.publish("market.volume", Event("vol", b"2"))
    await until(lambda: len(seen) == 2, timeout=5)
    await asyncio.sleep(0.05)
    assert seen == ["market.price.BTC", "market.volume"]


async def test_the_hop_rule_runs_before_the_handler(place):
    rt, make = place
    seen = []
    agent = await make("hops", ["hop.in"], lambda ctx, topic, event: seen.append(event.metadata["hop"]))
    await rt.bus.publish("hop.in", Event("n", b"dead", metadata={"ttl": "1"}))  # no hop left after this one
    await rt.bus.publish("hop.in", Event("n", b"alive", metadata={"ttl": "5", "hop": "2"}))
    await until(lambda: seen, timeout=5)
    assert seen == ["3"] and agent.core.expired == 1


async def test_what_an_agent_emits_is_stamped_and_inherits_the_hop_budget(place):
    rt, make = place
    out = rt.bus.subscribe("relay.out")

    async def relay(ctx, topic, event):
        await ctx.emit("relay.out", {"got": event.text()})

    await make("relay", ["relay.in"], relay)
    await rt.bus.publish("relay.in", Event("n", b"x", metadata={"ttl": "9", "hop": "4"}))
    _, emitted = await asyncio.wait_for(out.get(), 5)
    md = emitted.metadata
    assert md["sender"] == "agent.relay" and (md["ttl"], md["hop"]) == ("8", "5")
    assert emitted.json() == {"got": "x"}


async def test_a_raising_handler_is_contained_reported_and_the_agent_goes_on(place):
    rt, make = place
    errors = rt.bus.subscribe("agent.*.error")
    seen = []

    async def fragile(ctx, topic, event):
        if event.payload == b"bad":
            raise ValueError("cannot handle bad")
        seen.append(event.payload)

    agent = await make("fragile", ["in"], fragile)
    await rt.bus.publish("in", Event("n", b"bad"))
    await rt.bus.publish("in", Event("n", b"good"))
    topic, report = await asyncio.wait_for(errors.get(), 5)
    body = report.json()
    assert topic == "agent.fragile.error" and body["error_type"] == "ValueError" and not body["fatal"]
    await until(lambda: seen == [b"good"], timeout=5)
    assert agent.core.failed == 1 and agent.core.status == "running"


async def test_the_restart_policy_moves_an_agent_that_keeps_failing_to_failed(place):
    rt, make = place
    errors = rt.bus.subscribe("agent.doomed.error")

    def always(ctx, topic, event):
        raise RuntimeError("no")

    agent = await make("doomed", ["in"], always, restart=RestartPolicy(max_failures=2, window_s=60))
    for _ in range(3):
        await rt.bus.publish("in", Event("n", b"x"))
    reports = [(await asyncio.wait_for(errors.get(), 5))[1].json() for _ in range(3)]
    assert [r["fatal"] for r in reports] == [False, False, True]
    await until(lambda: agent.core.status == "failed", timeout=5)


async def test_the_mailbox_size_bounds_what_waits_and_nothing_is_lost(place):
    rt, make = place
    gate, seen = asyncio.Event(), []

    async def slow(ctx, topic, event):
        await gate.wait()
        seen.append(int(event.payload))

    agent = await make("narrow", ["in"], slow, mailbox_size=3)
    assert agent.core.mailbox.maxsize == 3
    publisher = asyncio.create_task(_publish_many(rt, "in", 20))
    await asyncio.sleep(0.3)
    assert agent.core.mailbox_depth <= 3  # the rest waits upstream: backpressure, not drops
    if rt.bridge is None:
        assert not publisher.done()  # in-process the publisher itself waits (through the bridge, its buffers)
    gate.set()
    await asyncio.wait_for(publisher, 10)
    await until(lambda: len(seen) == 20, timeout=10)
    assert seen == list(range(20)) and agent.core.mailbox.stats.dropped == {}


async def _publish_many(rt: Loom, topic: str, n: int) -> None:
    for i in range(n):
        await rt.bus.publish(topic, Event("n", str(i).encode()))


async def test_a_handler_asks_another_agent_and_gets_the_reply_before_its_next_event(place):
    rt, make = place

    async def echo(ctx, topic, event):
        await ctx.reply(ctx.thread(event), event.payload, type=None)

    answers = []

    async def asker(ctx, topic, event):
        reply = await ctx.request(ctx.thread(event), "svc.echo", event.payload, timeout_ms=3000, type="echo.please")
        answers.append(reply.payload)

    await loom.Agent("echo", topics=["svc.echo"], on_event=echo, runtime=rt).start()
    await make("asker", ["ask"], asker)
    for word in (b"one", b"two"):
        await rt.bus.publish("ask", Event("q", word))
    await until(lambda: len(answers) == 2, timeout=5)
    assert answers == [b"one", b"two"]
    await rt.agents.delete("echo")


async def test_a_request_type_is_what_the_replier_sees(place):
    rt, make = place
    types = []

    async def researcher(ctx, topic, event):
        types.append(event.type)
        if event.type == "research.request":
            await ctx.reply(ctx.thread(event), {"found": event.text()})

    await make("researcher", ["topic.research"], researcher)
    planner = await make("planner")
    reply = await planner.ctx.request(None, "topic.research", "loom", type="research.request", timeout_ms=3000)
    assert types == ["research.request"] and reply.type == "collab.reply" and reply.json() == {"found": "loom"}


async def test_a_request_nobody_can_answer_fails_at_once(place):
    _, make = place
    asker = await make("hopeful")
    started = asyncio.get_running_loop().time()
    with pytest.raises(NoSubscribers, match="nobody.listens"):
        await asker.ctx.request(None, "nobody.listens", b"?", timeout_ms=5000)
    assert asyncio.get_running_loop().time() - started < 2


async def test_stopping_the_agent_fails_its_pending_requests_at_once(place):
    rt, make = place
    rt.bus.subscribe("silent")  # listens, never answers
    asker = await make("leaving")
    pending = asyncio.create_task(asker.ctx.request(None, "silent", b"?", timeout_ms=10_000))
    await asyncio.sleep(0.1)
    await asker.stop()
    with pytest.raises(ClosedError):
        await asyncio.wait_for(pending, 2)


async def test_state_and_counters_are_the_cores(place):
    rt, make = place

    def count(ctx, topic, event):
        ctx.state.persistent["n"] = ctx.state.persistent.get("n", 0) + 1

    agent = await make("counter", ["tick"], count)
    for _ in range(3):
        await rt.bus.publish("tick", Event("t", b""))
    await until(lambda: agent.core.handled == 3, timeout=5)
    snap = agent.core.snapshot()
    assert agent.state.persistent["n"] == 3 and snap["handled"] == 3 and snap["topics"][0] == "agent.counter.replies"
    assert json.dumps(snap)  # inspectors can show it


async def test_a_handler_gets_its_reply_while_events_pile_up_behind_it(place):
    """The reply a handler waits for is not stuck behind the events queued for it (behind the
    bridge it is behind them on the wire: the stream's reader must still take it)."""
    rt, make = place
    got = []

    async def echo(ctx, topic, event):
        await ctx.reply(ctx.thread(event), event.payload)

    async def asker(ctx, topic, event):
        if event.type == "ask":
            await asyncio.sleep(0.2)  # meanwhile the mailbox fills and more wait behind it
            reply = await ctx.request(None, "svc.echo", b"ping", timeout_ms=3000)
            got.append(reply.payload if reply else None)

    await loom.Agent("echo", topics=["svc.echo"], on_event=echo, runtime=rt).start()
    await make("busy", ["work"], asker, mailbox_size=4)
    await rt.bus.publish("work", Event("ask", b""))
    flood = asyncio.create_task(_publish_many(rt, "work", 50))
    await until(lambda: got, timeout=5)
    assert got == [b"ping"]
    await asyncio.wait_for(flood, 10)
    await rt.agents.delete("echo")


async def test_a_runtime_stopped_error_from_elsewhere_is_an_ordinary_handler_failure(place, tmp_path):
    rt, make = place
    other = await Loom(name="other", workspace=tmp_path / "other", native_tools=()).start()
    await other.stop()
    seen = []

    async def handler(ctx, topic, event):
        seen.append(event.payload)
        if event.payload == b"stale":
            await other.tools.invoke("anything", {})  # a runtime that stopped: RuntimeStopped

    agent = await make("survivor", ["in"], handler)
    for payload in (b"stale", b"next"):
        await rt.bus.publish("in", Event("n", payload))
    await until(lambda: seen == [b"stale", b"next"], timeout=5)
    assert agent.core.failed == 1 and agent.core.status == "running"
