"""The user-facing SDK: Agent, Context, Thread, @capability (the seed API)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import loom
from loom import Agent, Event, NoRuntime, ToolError, UsageError, capability
from loom.sdk import get_capability
from tests.conftest import until

ROOT = Path(__file__).resolve().parents[1]


@capability("research.search", version="1.0")
def search(query: str, limit: int = 2) -> dict:
    """Search the knowledge base.

    Longer explanation that is not part of the description.
    """
    return {"query": query, "results": [f"r{i}" for i in range(limit)]}


async def test_the_seed_api_runs_as_written(rt):
    async def planner_handler(ctx, topic, event):
        if event.type == "user.question":
            thread = ctx.thread(event)
            results = await ctx.request(thread, "topic.research", payload=event.payload, first_k=1, timeout_ms=2000)
            await ctx.reply(thread, {"done": True, "research": results.json()})

    async def researcher(ctx, topic, event):
        await ctx.reply(ctx.thread(event), await ctx.tool("research.search", {"query": event.text()}))

    planner = Agent("planner", topics=["topic.plan"], on_event=planner_handler)
    await planner.start()
    await Agent("researcher", topics=["topic.research"], capabilities=[search], on_event=researcher).start()
    reply = await loom.request_reply("topic.plan", "What is Loom?", timeout=2, type="user.question")
    assert reply.json() == {"done": True, "research": {"query": "What is Loom?", "results": ["r0", "r1"]}}
    env = loom.Envelope.from_event(reply)
    assert env.sender == "agent.planner" and env.hop == 1


async def test_an_agent_needs_a_runtime():
    agent = Agent("lonely", topics=["t"])
    with pytest.raises(NoRuntime):
        await agent.start()
    assert not agent.running
    async with loom.Loom() as rt:
        await Agent("explicit", runtime=rt).start()
        assert "explicit" in rt.agents


async def test_emit_from_outside_a_handler_publishes_as_the_agent(rt):
    out = rt.bus.subscribe("news.>")
    agent = await Agent("cell", runtime=rt).start()
    assert await agent.emit("news.today", {"headline": "hi"}, type="news") == 1
    _, ev = await out.get()
    assert ev.type == "news" and ev.json() == {"headline": "hi"}
    assert ev.metadata["sender"] == "agent.cell" and ev.source == "agent.cell"


async def test_redefining_an_agent_replaces_the_old_one_cleanly(rt):
    calls = []

    def make(tag):
        async def handler(ctx, topic, event):
            calls.append(tag)

        return handler

    await Agent("cellagent", topics=["t"], on_event=make("v1")).start()
    subs = len(rt.bus.subscriptions())
    v2 = await Agent("cellagent", topics=["t"], on_event=make("v2")).start()  # the cell re-ran
    assert len(rt.bus.subscriptions()) == subs
    await rt.bus.publish("t", Event("t"))
    await until(lambda: calls)
    assert calls == ["v2"]
    await v2.stop()
    assert "cellagent" not in rt.agents and len(rt.bus.subscriptions()) == subs - 1


async def test_stopping_an_old_definition_does_not_remove_its_replacement(rt):
    old = await Agent("dup", topics=["t"]).start()
    new = await Agent("dup", topics=["t"]).start()
    await old.stop()
    assert rt.agents["dup"].status == "running" and new.running


async def test_request_with_first_k_returns_a_list(rt):
    async def answer(ctx, topic, event):
        await ctx.reply(ctx.thread(event), ctx.agent_id)

    for name in ("w1", "w2", "w3"):
        await Agent(name, topics=["pool"], on_event=answer).start()
    asker = await Agent("asker").start()
    replies = await asker.ctx.request(None, "pool", b"?", first_k=2, timeout_ms=1000)
    assert isinstance(replies, list) and len(replies) == 2
    rt.bus.subscribe("silent")
    assert await asker.ctx.request(None, "silent", b"?", timeout_ms=20) is None
    with pytest.raises(loom.RequestTimeout):
        await asker.ctx.request(None, "silent", b"?", timeout_ms=20, raise_on_timeout=True)
    with pytest.raises(loom.NoSubscribers, match="'void'"):  # at once: nothing could ever reply
        await asker.ctx.request(None, "void", b"?", timeout_ms=5000)


async def test_context_collaboration_methods(rt):
    async def worker(ctx, topic, event):
        thread = ctx.thread(event)
        if event.type == "collab.request":
            await ctx.reply(thread, {"worker": ctx.agent_id})
        elif event.type == "collab.cfp":
            await ctx.propose(thread, None, score=len(ctx.agent_id))
        elif event.type == "collab.award":
            await ctx.reply(thread, "built", error=None if ctx.agent_id != "longest" else "broke")

    for name in ("a", "bb", "longest"):
        await Agent(name, topics=[f"work.{name}", "bids"], on_event=worker).start()
    boss = await Agent("boss").start()
    fan = await boss.ctx.fanout(["work.a", "work.bb", "work.none"], b"go", strategy="majority", timeout_ms=500)
    assert fan.satisfied and fan.missing == ("work.none",)
    cnp = await boss.ctx.contract_net("build", "bids", window_ms=300, expected=3, execution_timeout_ms=500)
    assert [a.status for a in cnp.awards] == ["error", "ok"] and cnp.winners[0].bidder == "agent.bb"


async def test_barrier_between_two_agents(rt):
    a = await Agent("pa").start()
    b = await Agent("pb").start()
    ra, rb = await asyncio.gather(
        a.ctx.barrier("go", ["pa", "pb"], timeout_ms=1000), b.ctx.barrier("go", ["pa", "pb"], timeout_ms=1000)
    )
    assert ra.ok and rb.ok and ra.arrived == ("pa", "pb")


async def test_ctx_subscribe_joins_a_thread_at_run_time(rt):
    seen = []

    async def handler(ctx, topic, event):
        seen.append(topic)

    agent = await Agent("joiner", on_event=handler).start()
    agent.ctx.subscribe("thread.9.broadcast")
    assert "thread.9.broadcast" in agent.ctx.subscriptions()
    await rt.bus.publish("thread.9.broadcast", Event("t"))
    await until(lambda: seen)
    agent.ctx.unsubscribe("thread.9.broadcast")
    assert seen == ["thread.9.broadcast"]


async def test_persistent_state_through_the_context(rt):
    async def count(ctx, topic, event):
        ctx.state.persistent["n"] = ctx.state.persistent.get("n", 0) + 1

    agent = await Agent("counter", topics=["t"], on_event=count).start()
    for _ in range(3):
        await rt.bus.publish("t", Event("t"))
    await until(lambda: agent.state.persistent.get("n") == 3)


# -- capabilities --------------------------------------------------------------------------


def test_capability_schema_comes_from_the_signature():
    cap = get_capability(search)
    assert (cap.name, cap.version, cap.description) == ("research.search", "1.0", "Search the knowledge base.")
    assert cap.schema["required"] == ["query"]
    assert cap.schema["properties"]["limit"] == {"default": 2, "title": "Limit", "type": "integer"}
    assert search("x", 1) == {"query": "x", "results": ["r0"]}  # still a plain function


async def test_capability_arguments_are_validated(rt):
    await Agent("r", capabilities=[search]).start()
    assert [d.key for d in rt.capabilities.list() if d.provider == "local"] == ["research.search:1.0"]
    ctx = (await Agent("caller").start()).ctx
    assert (await ctx.tool("research.search", {"query": "q", "limit": "3"}))["results"] == ["r0", "r1", "r2"]
    with pytest.raises(ToolError) as info:
        await ctx.tool("research.search", {"limit": "many"})
    assert info.value.code == "INVALID_PARAMS" and set(info.value.details) == {"query", "limit"}
    with pytest.raises(ToolError) as info:
        await ctx.tool("research.nothing", {})
    assert info.value.code == "NOT_FOUND" and "research.search" in str(info.value)
    with pytest.raises(ToolError, match="NOT_FOUND"):
        await ctx.tool("research.search", {"query": "q"}, version="2.0")


async def test_a_raising_or_slow_capability_gives_a_coded_error(rt):
    @capability("boom")
    def boom() -> None:
        raise RuntimeError("kaput")

    @capability("slow")
    async def slow() -> None:
        await asyncio.sleep(5)

    await Agent("tools", capabilities=[boom, slow]).start()
    ctx = (await Agent("caller").start()).ctx
    with pytest.raises(ToolError) as info:
        await ctx.tool("boom")
    assert info.value.code == "CAPABILITY_ERROR" and "kaput" in str(info.value)
    with pytest.raises(ToolError) as info:
        await ctx.tool("slow", timeout_ms=20)
    assert info.value.code == "ACTION_TIMEOUT"


async def test_tool_actions_report_their_result(rt):
    class Caller:
        def on_event(self, event, state):
            return [loom.Action.call("research.search", {"query": "q"}), loom.Action.call("missing")]

    results = rt.bus.subscribe("agent.caller")
    await Agent("r", capabilities=[search]).start()
    await rt.agents.create("caller", Caller(), topics=["go"], start=True)
    await rt.bus.publish("go", Event("t"))
    first, second = (await results.get()).event, (await results.get()).event
    assert first.metadata["status"] == "ok" and first.json()["output"]["results"] == ["r0", "r1"]
    assert second.metadata["status"] == "error" and "NOT_FOUND" in second.json()["error"]


def test_bad_capabilities_fail_at_decoration_time():
    with pytest.raises(UsageError, match=r"\*args/\*\*kwargs"):

        @capability("bad")
        def bad(*args):
            pass

    with pytest.raises(UsageError, match="non-empty str"):
        capability("")
    with pytest.raises(UsageError, match="version"):
        capability("x", version="")
    with pytest.raises(UsageError, match="is not a capability"):
        Agent("a", capabilities=[lambda: None])


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("a.b",), {}, "without dots"),
        (("",), {}, "non-empty"),
        (("a",), {"topics": "topic.a"}, "not the string"),
        (("a",), {"topics": ["a..b"]}, "empty"),
        (("a",), {"on_event": 42}, "must be a function"),
        (("a",), {"on_event": lambda ctx: None}, r"must accept \(ctx, topic, event\)"),
        (("a",), {"address": "no-port"}, "host:port"),
    ],
)
def test_agent_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises((UsageError, ValueError), match=match):
        Agent(*args, **kwargs)


async def test_context_rejects_bad_arguments(rt):
    ctx = (await Agent("c").start()).ctx
    with pytest.raises(UsageError, match="timeout_ms"):
        await ctx.request(None, "t", timeout_ms=0)
    with pytest.raises(UsageError, match="first_k"):
        await ctx.request(None, "t", first_k=0)
    not_started = Agent("idle")
    with pytest.raises(UsageError, match="not started"):
        await not_started.emit("t")


# -- the example ---------------------------------------------------------------------------


def test_the_trio_example_answers_the_question():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "trio.py"), "What is Loom?"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "agent.researcher" in out.stdout and "collab.reply" in out.stdout
    assert "research.request" in out.stdout  # the planner names its request's type; the researcher tests it
    assert "event-driven agent runtime" in out.stdout


async def test_a_request_for_several_replies_raises_request_timeout_when_asked(rt):
    rt.bus.subscribe("quiet")
    asker = await Agent("impatient").start()
    for first_k in (1, 2):
        with pytest.raises(loom.RequestTimeout):
            await asker.ctx.request(None, "quiet", b"?", first_k=first_k, timeout_ms=20, raise_on_timeout=True)
