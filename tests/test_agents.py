"""AgentRuntime: lifecycle, actor semantics, envelope rules, failures, state, directories."""

from __future__ import annotations

import asyncio
import json

import pytest

import loom
from loom import (
    Action,
    AgentNotFound,
    BackpressureTimeout,
    Envelope,
    Event,
    Loom,
    MemoryStateStore,
    QoS,
    RestartPolicy,
    SQLiteStateStore,
    UsageError,
)
from tests.conftest import until


class Recorder:
    """A behavior that records (topic, payload) and can be told to fail or block."""

    def __init__(self, fail_on: bytes | None = None, gate: asyncio.Event | None = None):
        self.seen: list[tuple[str, bytes]] = []
        self.events: list[Event] = []
        self.fail_on = fail_on
        self.gate = gate
        self.init_config = None
        self.shutdowns = 0
        self.got = asyncio.Event()

    async def on_init(self, config):
        self.init_config = config

    async def on_event(self, event, state):
        if self.gate is not None:
            await self.gate.wait()
        if event.payload == self.fail_on:
            raise ValueError(f"cannot handle {event.payload!r}")
        self.seen.append((state.topic, event.payload))
        self.events.append(event)
        self.got.set()
        return None

    async def on_shutdown(self):
        self.shutdowns += 1


# -- lifecycle (upstream agent_runtime_test.rs) --------------------------------------------


async def test_created_agent_starts_receives_in_order_and_stops(rt):
    rec = Recorder()
    agent = await rt.agents.create("a", rec, topics=["topic.a"])
    assert agent.status == "created" and rt.agents["a"] is agent
    await rt.bus.publish("topic.a", Event("t", b"before-start"))  # not subscribed yet: not queued
    await rt.agents.start("a")
    assert agent.status == "running" and rec.init_config.agent_id == "a"
    for i in range(5):
        await rt.bus.publish("topic.a", Event("t", str(i).encode()))
    await until(lambda: len(rec.seen) == 5)
    assert [p for _, p in rec.seen] == [b"0", b"1", b"2", b"3", b"4"]
    await rt.agents.stop("a")
    assert agent.status == "stopped" and rec.shutdowns == 1
    assert await rt.bus.publish("topic.a", Event("t", b"late")) == 0
    await rt.agents.stop("a")  # idempotent
    assert rec.shutdowns == 1


async def test_delete_unknown_agent_raises(rt):
    with pytest.raises(AgentNotFound, match="'ghost' not found"):
        await rt.agents.delete("ghost")
    with pytest.raises(AgentNotFound):
        rt.agents["ghost"]


async def test_two_agents_on_one_topic_both_receive_and_two_topics_reach_one_agent(rt):
    a, b = Recorder(), Recorder()
    await rt.agents.create("a", a, topics=["shared", "only.a"], start=True)
    await rt.agents.create("b", b, topics=["shared"], start=True)
    await rt.bus.publish("shared", Event("t", b"s"))
    await rt.bus.publish("only.a", Event("t", b"o"))
    await until(lambda: len(a.seen) == 2 and len(b.seen) == 1)
    assert sorted(a.seen) == [("only.a", b"o"), ("shared", b"s")] and b.seen == [("shared", b"s")]


async def test_runtime_stop_stops_every_agent_and_calls_on_shutdown():
    rec = Recorder()
    async with Loom() as rt:
        await rt.agents.create("a", rec, topics=["t"], start=True)
    assert rt.agents["a"].status == "stopped" and rec.shutdowns == 1


async def test_handler_runs_one_event_at_a_time(rt):
    active, peak = 0, 0

    class Slow:
        async def on_event(self, event, state):
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.001)
            active -= 1

    await rt.agents.create("slow", Slow(), topics=["t"], start=True)
    for i in range(20):
        await rt.bus.publish("t", Event("t", str(i).encode()))
    await until(lambda: rt.agents["slow"].handled == 20)
    assert peak == 1


async def test_recreating_an_agent_replaces_it_without_leaking_subscriptions(rt):
    old, new = Recorder(), Recorder()
    await rt.agents.create("x", old, topics=["t"], start=True)
    subs_before = len(rt.bus.subscriptions())
    await rt.agents.create("x", new, topics=["t"], start=True)  # what re-running a cell does
    assert len(rt.bus.subscriptions()) == subs_before and old.shutdowns == 1
    await rt.bus.publish("t", Event("t", b"1"))
    await until(lambda: new.seen)
    assert old.seen == [] and new.seen == [("t", b"1")]


# -- envelope rules ------------------------------------------------------------------------


async def test_ttl_one_never_reaches_the_handler_and_is_counted(rt):
    rec = Recorder()
    await rt.agents.create("a", rec, topics=["t"], start=True)
    await rt.bus.publish("t", Envelope.new("th", ttl=1).attach(Event("t", b"dead")))
    await rt.bus.publish("t", Envelope.new("th", ttl=2).attach(Event("t", b"alive")))
    await until(lambda: rec.seen)
    assert rec.seen == [("t", b"alive")] and rt.agents["a"].expired == 1
    md = rec.events[0].metadata
    assert (md["hop"], md["ttl"]) == ("1", "1")


async def test_emitted_events_carry_the_agent_as_sender_and_inherit_the_hop_budget(rt):
    class Forwarder:
        def on_event(self, event, state):
            return [Action.emit("out", Event("fwd", event.payload))]

    out = rt.bus.subscribe("out")
    await rt.agents.create("fwd", Forwarder(), topics=["in"], start=True)
    await rt.bus.publish("in", Envelope.new("th", ttl=5).attach(Event("t", b"p")))
    _, ev = await asyncio.wait_for(out.get(), 1)
    env = Envelope.from_event(ev)
    assert env.sender == "agent.fwd" and (env.ttl, env.hop) == (4, 1)
    assert rt.agents["fwd"].emitted == 1


async def test_agents_that_keep_answering_each_other_stop_after_the_hop_budget(rt):
    class PingPong:
        def __init__(self, other):
            self.other = other

        def on_event(self, event, state):
            return [Action.emit(f"to.{self.other}", Event("ping"))]

    await rt.agents.create("p", PingPong("q"), topics=["to.p"], start=True)
    await rt.agents.create("q", PingPong("p"), topics=["to.q"], start=True)
    await rt.bus.publish("to.p", Event("ping"))
    await until(lambda: rt.agents["p"].expired + rt.agents["q"].expired == 1)
    assert rt.agents["p"].handled + rt.agents["q"].handled == 15  # ttl 16: 15 handled hops


# -- failures ------------------------------------------------------------------------------


async def test_a_raising_handler_is_contained_reported_and_the_agent_goes_on(rt):
    errors = rt.bus.subscribe("agent.a.error")
    rec = Recorder(fail_on=b"bad")
    await rt.agents.create("a", rec, topics=["t"], start=True)
    for p in (b"1", b"bad", b"2"):
        await rt.bus.publish("t", Event("t", p))
    await until(lambda: len(rec.seen) == 2)
    agent = rt.agents["a"]
    assert agent.status == "running" and (agent.failed, agent.handled) == (1, 2)
    assert "ValueError" in agent.last_error
    _, err = await asyncio.wait_for(errors.get(), 1)
    body = err.json()
    assert err.type == "agent.error" and body["error_type"] == "ValueError" and body["fatal"] is False
    assert body["topic"] == "t" and "cannot handle" in body["error"]


async def test_restart_policy_moves_a_failing_agent_to_failed_instead_of_looping(rt):
    errors = rt.bus.subscribe("agent.a.error")
    rec = Recorder(fail_on=b"bad")
    await rt.agents.create("a", rec, topics=["t"], restart=RestartPolicy(max_failures=2, window_s=60), start=True)
    for _ in range(5):
        await rt.bus.publish("t", Event("t", b"bad"))
    await until(lambda: rt.agents["a"].status == "failed")
    agent = rt.agents["a"]
    assert agent.failed == 3 and rec.shutdowns == 1 and agent.mailbox.closed
    bodies = [e.json() for _, e in [errors.get_nowait() for _ in range(errors.qsize())]]
    assert [b["fatal"] for b in bodies] == [False, False, True]
    await rt.agents.start("a")  # a failed agent can be started again deliberately
    assert agent.status == "running"


async def test_on_init_failure_marks_the_agent_failed(rt):
    class BadInit:
        def on_init(self, config):
            raise RuntimeError("no config")

        def on_event(self, event, state):
            pass

    await rt.agents.create("bad", BadInit(), start=True)
    await until(lambda: rt.agents["bad"].status == "failed")
    assert "no config" in rt.agents["bad"].last_error


async def test_returning_something_that_is_not_an_action_is_a_contained_error(rt):
    class Wrong:
        def on_event(self, event, state):
            return ["not an action"]

    await rt.agents.create("w", Wrong(), topics=["t"], start=True)
    await rt.bus.publish("t", Event("t"))
    await until(lambda: rt.agents["w"].failed == 1)
    assert "expected loom.Action" in rt.agents["w"].last_error


# -- subscriptions (reference §3.3) --------------------------------------------------------


async def test_dynamic_subscriptions_and_their_errors(rt):
    rec = Recorder()
    await rt.agents.create("a", rec, topics=["t"], start=True)
    assert rt.agents.subscriptions("a") == ["agent.a.replies", "t"]
    rt.agents.subscribe("a", "thread.42.broadcast")
    await rt.bus.publish("thread.42.broadcast", Event("t", b"joined"))
    await until(lambda: rec.seen)
    with pytest.raises(UsageError, match="already subscribed"):
        rt.agents.subscribe("a", "t")
    with pytest.raises(AgentNotFound):
        rt.agents.subscribe("ghost", "t")
    rt.agents.unsubscribe("a", "thread.42.broadcast")
    assert await rt.bus.publish("thread.42.broadcast", Event("t")) == 0
    with pytest.raises(UsageError, match="not subscribed"):
        rt.agents.unsubscribe("a", "thread.42.broadcast")
    with pytest.raises(UsageError, match="private reply topic"):
        rt.agents.unsubscribe("a", "agent.a.replies")
    with pytest.raises(AgentNotFound):
        rt.agents.unsubscribe("ghost", "t")


async def test_private_reply_topics_are_point_to_point(rt):
    a, b = Recorder(), Recorder()
    await rt.agents.create("a", a, start=True)
    await rt.agents.create("b", b, start=True)
    await rt.bus.publish("agent.a.replies", Event("t", b"for-a"))
    await until(lambda: a.seen)
    await asyncio.sleep(0.01)
    assert a.seen == [("agent.a.replies", b"for-a")] and b.seen == []


# -- state ---------------------------------------------------------------------------------


class Counter:
    def on_event(self, event, state):
        state.persistent["count"] = state.persistent.get("count", 0) + 1
        state.ephemeral["last"] = event.payload


async def test_persistent_state_is_saved_and_reloaded_when_the_agent_is_recreated():
    store = MemoryStateStore()
    async with Loom(state=store) as rt:
        await rt.agents.create("c", Counter(), topics=["t"], start=True)
        for _ in range(3):
            await rt.bus.publish("t", Event("t", b"x"))
        await until(lambda: rt.agents["c"].handled == 3)
        assert rt.agents["c"].state.persistent == {"count": 3}
        assert rt.agents["c"].state.ephemeral == {"last": b"x"}
        await rt.agents.create("c", Counter(), topics=["t"], start=True)
        assert rt.agents["c"].state.persistent == {"count": 3} and rt.agents["c"].state.ephemeral == {}
    assert store.load("c") == {"count": 3}


async def test_sqlite_state_survives_a_new_runtime(tmp_path):
    path = tmp_path / "state.sqlite3"
    async with Loom(state=path) as rt:
        await rt.agents.create("c", Counter(), topics=["t"], start=True)
        await rt.bus.publish("t", Event("t"))
        await until(lambda: rt.agents["c"].handled == 1)
    async with Loom(state=str(path)) as rt2:
        agent = await rt2.agents.create("c", Counter(), topics=["t"])
        assert agent.state.persistent == {"count": 1}
    store = SQLiteStateStore(path)
    assert store.load("c") == {"count": 1} and store.load("other") is None
    store.delete("c")
    assert store.load("c") is None
    store.close()


async def test_state_that_is_not_json_is_reported_and_the_agent_goes_on(rt):
    class Bad:
        def on_event(self, event, state):
            state.persistent["when"] = object()

    errors = rt.bus.subscribe("agent.b.error")
    await rt.agents.create("b", Bad(), topics=["t"], start=True)
    await rt.bus.publish("t", Event("t"))
    _, err = await asyncio.wait_for(errors.get(), 1)
    assert "not JSON-serialisable" in err.json()["error"] and rt.agents["b"].status == "running"


def test_loom_rejects_a_bad_state_option():
    with pytest.raises(UsageError, match="state must be"):
        Loom(state=42)


# -- mailbox -------------------------------------------------------------------------------


async def test_a_full_mailbox_applies_backpressure_to_publishers(rt):
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    await rt.agents.create("m", rec, topics=["t"], mailbox_size=3, start=True)
    await rt.bus.publish("t", Event("t", b"0"))  # taken by the handler, which blocks on the gate
    await asyncio.sleep(0.01)
    for i in range(1, 4):
        await rt.bus.publish("t", Event("t", str(i).encode()))
    assert rt.agents["m"].mailbox_depth == 3
    with pytest.raises(BackpressureTimeout):
        await rt.bus.publish("t", Event("t", b"4"), timeout=0.05)
    gate.set()
    await until(lambda: len(rec.seen) == 4)
    assert [p for _, p in rec.seen] == [b"0", b"1", b"2", b"3"]


async def test_a_realtime_mailbox_drops_instead_and_counts(rt):
    gate = asyncio.Event()
    await rt.agents.create("m", Recorder(gate=gate), topics=["t"], mailbox_size=2, mailbox_qos=QoS.REALTIME, start=True)
    for i in range(10):
        await rt.bus.publish("t", Event("t", str(i).encode()))
    assert rt.agents["m"].mailbox.stats.dropped["queue_full"] >= 7
    gate.set()


@pytest.mark.slow
async def test_a_hundred_agents_times_a_thousand_events_lose_nothing(rt):
    counts = {}

    class Count:
        def __init__(self, name):
            self.name = name
            counts[name] = 0

        def on_event(self, event, state):
            counts[self.name] += 1

    for i in range(100):
        await rt.agents.create(f"a{i}", Count(f"a{i}"), topics=["load.>"], start=True)
    for i in range(1000):
        await rt.bus.publish(f"load.{i % 7}", Event("t"))
    await until(lambda: all(c == 1000 for c in counts.values()), timeout=60)
    assert sum(counts.values()) == 100_000
    assert all(a.mailbox.stats.dropped == {} for a in rt.agents)


# -- directories ---------------------------------------------------------------------------


async def test_directory_tracks_agents_by_topic_pattern_and_capability(rt):
    await rt.agents.create("prices", Recorder(), topics=["market.price.*"], capabilities=["quote"])
    await rt.agents.create("all", Recorder(), topics=["market.>"], capabilities=["quote", "echo"])
    await rt.agents.create("news", Recorder(), topics=["news.>"])
    who = [i.agent_id for i in rt.directory.by_topic("market.price.BTC")]
    assert who == ["all", "prices"]
    assert [i.agent_id for i in rt.directory.by_topic("agent.news.replies")] == ["news"]
    assert [i.agent_id for i in rt.directory.by_capability("quote")] == ["all", "prices"]
    await rt.agents.delete("all")
    assert [i.agent_id for i in rt.directory.by_capability("echo")] == []
    assert "all" not in rt.directory and len(rt.directory) == 2
    rt.agents.subscribe("news", "market.price.ETH")
    assert "news" in [i.agent_id for i in rt.directory.by_topic("market.price.ETH")]


async def test_capability_directory_by_name_and_version(rt):
    caps = rt.capabilities
    for v in ("1.0", "1.10", "1.2"):
        caps.add(loom.CapabilityDescriptor(name="search", version=v))
    assert [d.version for d in caps.find_by_name("search")] == ["1.0", "1.10", "1.2"]
    assert caps.get("search").version == "1.10" and caps.get("search", "1.2").key == "search:1.2"
    assert caps.get("search", "9") is None and caps.get("nope") is None
    caps.refresh([loom.CapabilityDescriptor(name="only", version="0.1")])
    assert [d.key for d in caps.list()] == ["only:0.1"]


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agent_id", "kwargs", "match"),
    [
        ("", {}, "non-empty"),
        (3, {}, "non-empty"),
        ("a.b", {}, "must not contain"),
        ("a b", {}, "whitespace"),
        ("ok", {"topics": ["bad..topic"]}, "segment 2 is empty"),
        ("ok", {"mailbox_size": 0}, "mailbox_size"),
    ],
)
async def test_create_rejects_bad_input(rt, agent_id, kwargs, match):
    with pytest.raises((UsageError, TypeError), match=match):
        await rt.agents.create(agent_id, Recorder(), **kwargs)
    assert len(rt.agents) == 0


async def test_create_rejects_a_behavior_without_on_event(rt):
    with pytest.raises(UsageError, match="no on_event"):
        await rt.agents.create("x", object())


async def test_snapshot_is_json_safe_for_inspectors(rt):
    await rt.agents.create("c", Counter(), topics=["t"], start=True)
    await rt.bus.publish("t", Event("t", b"\xff"))
    await until(lambda: rt.agents["c"].handled == 1)
    snap = rt.agents["c"].snapshot()
    json.dumps(snap)
    assert snap["status"] == "running" and snap["state"]["persistent"] == {"count": 1}


async def test_events_of_publishers_still_waiting_when_an_agent_stops_are_counted(rt):
    gate = asyncio.Event()
    rec = Recorder(gate=gate)
    agent = await rt.agents.create("slow", rec, topics=["t"], mailbox_size=2, start=True)
    publishers = asyncio.gather(*(rt.bus.publish("t", Event("n", b"")) for _ in range(10)))
    await until(lambda: agent.mailbox_depth == 2)
    await rt.agents.stop("slow")
    delivered = sum(await publishers)
    dropped = rt.bus.stats("t").dropped
    assert dropped == {"agent_stopped": 9} and delivered == 3  # 1 in the handler, 2 queued, 7 waiting
