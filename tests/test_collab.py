"""Collaboration primitives: request/reply, fan-out strategies, barrier, contract net.

Every test also checks that the primitive leaves the bus with the subscriptions it found.
"""

from __future__ import annotations

import asyncio

import pytest

import loom
from loom import Agent, CollabTimeout, Envelope, Event, NoSubscribers, RequestTimeout, Strategy, UsageError, collab


def responder(rt, topic, *, delay=0.0, answer=None, score=None, name=None):
    """A raw-bus responder: answers collab.request on `topic` on the request's reply_to."""
    sub = rt.bus.subscribe(topic, types=["collab.request"])

    async def run():
        async for _, req in sub:
            env = Envelope.from_event(req)
            await asyncio.sleep(delay)
            md = {"score": str(score)} if score is not None else {}
            reply = Event("collab.reply", answer if answer is not None else req.payload, metadata=md)
            out = Envelope(env.thread_id, env.correlation_id, f"agent.{name or topic}")
            await rt.bus.publish(env.reply_to, out.attach(reply))

    rt.spawn(run(), name=f"test.responder:{topic}")
    return sub


def sub_count(rt):
    return len(rt.bus.subscriptions())


# -- request / reply -----------------------------------------------------------------------


async def test_request_reply_returns_the_correlated_reply(rt):
    responder(rt, "service.echo")
    before = sub_count(rt)
    reply = await collab.request_reply("service.echo", b"hello", timeout=1)
    assert reply.payload == b"hello" and reply.type == "collab.reply"
    assert sub_count(rt) == before


async def test_request_reply_ignores_uncorrelated_replies(rt):
    sub = rt.bus.subscribe("svc", types=["collab.request"])

    async def noisy():
        async for _, req in sub:
            env = Envelope.from_event(req)
            wrong = Envelope(env.thread_id, "someone-else")
            await rt.bus.publish(env.reply_to, wrong.attach(Event("collab.reply", b"wrong")))
            right = Envelope(env.thread_id, env.correlation_id)
            await rt.bus.publish(env.reply_to, right.attach(Event("collab.reply", b"right")))

    rt.spawn(noisy(), name="test.noisy")
    assert (await collab.request_reply("svc", None, timeout=1)).payload == b"right"


async def test_request_reply_timeout_returns_none_and_publishes_collab_timeout(rt):
    watch = rt.bus.subscribe("thread.*.reply", types=["collab.timeout"])
    rt.bus.subscribe("silent.one")  # someone listens, nobody answers
    before = sub_count(rt)
    assert await collab.request_reply("silent.one", b"?", timeout=0.05) is None
    assert sub_count(rt) == before
    _, ev = await asyncio.wait_for(watch.get(), 1)
    assert ev.metadata["reason"] == "request_reply_timeout"
    with pytest.raises(RequestTimeout, match="no reply on 'silent.one'") as raised:
        await collab.request_reply("silent.one", b"?", timeout=0.05, raise_on_timeout=True)
    assert isinstance(raised.value, CollabTimeout) and isinstance(raised.value, loom.LoomError)
    assert sub_count(rt) == before


async def test_a_request_to_a_topic_nobody_subscribes_fails_at_once(rt):
    before = sub_count(rt)
    started = asyncio.get_running_loop().time()
    with pytest.raises(NoSubscribers, match="nobody.home") as raised:
        await collab.request_reply("nobody.home", b"?", timeout=5)
    assert asyncio.get_running_loop().time() - started < 0.5  # not the 5 s timeout
    assert raised.value.topic == "nobody.home" and isinstance(raised.value, loom.LoomError)
    with pytest.raises(NoSubscribers):  # fan-out: when none of its targets has a subscriber
        await collab.fanout_fanin(["nobody.home", "nobody.there"], b"?", timeout=5)
    rt.bus.subscribe("somebody.there")
    partial = await collab.fanout_fanin(["nobody.home", "somebody.there"], b"?", timeout=0.05)
    assert partial.missing == ("nobody.home", "somebody.there") and not partial.satisfied
    assert sub_count(rt) == before + 1


async def test_a_cancelled_request_cleans_up(rt):
    rt.bus.subscribe("silent.one")
    before = sub_count(rt)
    task = asyncio.create_task(collab.request_reply("silent.one", b"?", timeout=10))
    await asyncio.sleep(0.01)
    assert sub_count(rt) == before + 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sub_count(rt) == before


async def test_bad_arguments_are_rejected(rt):
    with pytest.raises(UsageError, match="timeout"):
        await collab.request_reply("a", timeout=0)
    with pytest.raises(ValueError, match="wildcard"):
        await collab.request_reply("a.*", timeout=1)
    with pytest.raises(UsageError, match="at least one topic"):
        await collab.fanout_fanin([], b"")
    with pytest.raises(UsageError, match="not a single string"):
        await collab.fanout_fanin("a.b", b"")
    with pytest.raises(UsageError, match="unknown fan-in strategy"):
        await collab.fanout_fanin(["a"], b"", strategy="most")
    with pytest.raises(UsageError, match="k >= 1"):
        Strategy.first_k(0)


# -- fan-out / fan-in ----------------------------------------------------------------------


@pytest.fixture
async def racers(rt):
    for i, delay in enumerate((0.0, 0.05, 0.10)):
        responder(rt, f"service.race.{i}", delay=delay, score=100 - 50 * i)
    return [f"service.race.{i}" for i in range(3)]


@pytest.mark.parametrize(
    ("strategy", "replies", "satisfied"),
    [("first_k:2", 2, True), ("any", 1, True), ("all", 3, True), ("majority", 2, True)],
)
async def test_fanout_strategies(rt, racers, strategy, replies, satisfied):
    before = sub_count(rt)
    result = await collab.fanout_fanin(racers, b"go", strategy=strategy, timeout=2)
    assert (len(result.replies), result.satisfied) == (replies, satisfied)
    assert result.reply_topics == racers[:replies]  # the fastest answered first
    assert result.responders[0] == "agent.service.race.0"
    assert set(result.answered) | set(result.missing) == set(racers)
    assert sub_count(rt) == before


async def test_fanout_all_with_a_silent_target_returns_partial_results(rt, racers):
    targets = [*racers, "service.silent"]
    result = await collab.fanout_fanin(targets, b"go", strategy=Strategy.all(), timeout=0.3)
    assert not result.satisfied and len(result.replies) == 3
    assert result.missing == ("service.silent",) and result.answered == tuple(racers)
    with pytest.raises(CollabTimeout, match="missing"):
        await collab.fanout_fanin(targets, b"go", strategy="all", timeout=0.2, raise_on_timeout=True)


async def test_fanout_majority_is_met_without_the_slowest(rt):
    responder(rt, "vote.a")
    responder(rt, "vote.b")
    result = await collab.fanout_fanin(["vote.a", "vote.b", "vote.c"], b"?", strategy="majority", timeout=0.5)
    assert result.satisfied and result.missing == ("vote.c",) and result.elapsed_s < 0.4


async def test_fanout_timeout_strategy_collects_until_the_deadline(rt, racers):
    result = await collab.fanout_fanin(racers, b"go", strategy="timeout", timeout=0.3)
    assert len(result.replies) == 3 and result.satisfied and result.elapsed_s >= 0.29


async def test_fanout_publishes_a_summary(rt, racers):
    watch = rt.bus.subscribe("thread.*.reply", types=["collab.summary"])
    result = await collab.fanout_fanin(racers, b"go", strategy="first_k:2", timeout=1)
    _, ev = await asyncio.wait_for(watch.get(), 1)
    assert ev.metadata["thread_id"] == result.thread_id and ev.metadata["received"] == "2"


# -- barrier -------------------------------------------------------------------------------


async def test_barrier_releases_everyone_when_all_parties_arrived(rt):
    before = sub_count(rt)

    async def party(name, delay):
        await asyncio.sleep(delay)
        return await collab.barrier("sync.1", 3, timeout=2, participant=name)

    results = await asyncio.gather(party("a", 0), party("b", 0.05), party("c", 0.1))
    assert all(r.ok for r in results) and all(r.arrived == ("a", "b", "c") for r in results)
    assert sub_count(rt) == before


async def test_barrier_with_a_missing_party_says_who(rt):
    async def party(name):
        return await collab.barrier("sync.2", ["a", "b", "c"], timeout=0.2, participant=name)

    ra, rb = await asyncio.gather(party("a"), party("b"))
    assert not ra.ok and ra.missing == ("c",) and rb.missing == ("c",)
    with pytest.raises(CollabTimeout, match="1 of 2 arrived"):
        await collab.barrier("sync.3", 2, timeout=0.05, participant="a", raise_on_timeout=True)
    with pytest.raises(UsageError, match="not one of the barrier's parties"):
        await collab.barrier("sync.4", ["x"], participant="a")


# -- contract net --------------------------------------------------------------------------


def bidder(rt, name, score, *, fail=False, silent=False, topic="thread.cnp.test.broadcast"):
    """A raw-bus contract-net participant with its own inbox agent.<name>.replies."""
    cfp = rt.bus.subscribe(topic, types=["collab.cfp"])
    inbox = rt.bus.subscribe(f"agent.{name}.replies")
    log = []

    async def run_cfp():
        async for _, ev in cfp:
            env = Envelope.from_event(ev)
            out = Envelope(env.thread_id, env.correlation_id, f"agent.{name}", f"agent.{name}.replies")
            await rt.bus.publish(env.reply_to, out.attach(Event("collab.proposal", metadata={"score": str(score)})))

    async def run_inbox():
        async for _, ev in inbox:
            log.append(ev.type)
            if ev.type != "collab.award" or silent:
                continue
            env = Envelope.from_event(ev)
            md = {"status": "error", "error": "disk full"} if fail else {}
            out = Envelope(env.thread_id, env.correlation_id, f"agent.{name}")
            await rt.bus.publish(
                env.reply_to, out.attach(Event("collab.result", f"done by {name}".encode(), metadata=md))
            )

    rt.spawn(run_cfp(), name=f"test.cfp:{name}")
    rt.spawn(run_inbox(), name=f"test.inbox:{name}")
    return log


async def test_contract_net_awards_the_top_score_and_tells_the_losers(rt):
    logs = {n: bidder(rt, n, s) for n, s in (("low", 10), ("top", 80), ("mid", 50))}
    before = sub_count(rt)
    result = await collab.contract_net("task", "thread.cnp.test.broadcast", window=0.2, max_awards=1)
    assert [p.bidder for p in result.proposals] == ["agent.top", "agent.mid", "agent.low"]
    assert result.satisfied and [w.bidder for w in result.winners] == ["agent.top"]
    assert result.winners[0].result.payload == b"done by top"
    assert set(result.rejected) == {"agent.mid", "agent.low"}
    await asyncio.sleep(0.02)
    assert logs["top"] == ["collab.award"] and logs["mid"] == logs["low"] == ["collab.reject"]
    assert sub_count(rt) == before


async def test_contract_net_ties_are_broken_deterministically(rt):
    for n in ("zed", "amy", "bob"):
        bidder(rt, n, 70)
    result = await collab.contract_net("t", "thread.cnp.test.broadcast", window=0.1, expected=3)
    assert [p.bidder for p in result.proposals] == ["agent.amy", "agent.bob", "agent.zed"]
    assert result.winners[0].bidder == "agent.amy" and result.elapsed_s < 0.5  # `expected` ends the window


async def test_a_failing_winner_is_replaced_by_the_next_bidder(rt):
    bidder(rt, "best", 90, fail=True)
    bidder(rt, "silent", 80, silent=True)
    bidder(rt, "solid", 60)
    result = await collab.contract_net("t", "thread.cnp.test.broadcast", window=0.1, expected=3, execution_timeout=0.2)
    assert [(a.bidder, a.status) for a in result.awards] == [
        ("agent.best", "error"),
        ("agent.silent", "timeout"),
        ("agent.solid", "ok"),
    ]
    assert result.awards[0].error == "disk full" and result.satisfied
    no_retry = await collab.contract_net(
        "t", "thread.cnp.test.broadcast", window=0.1, expected=3, execution_timeout=0.2, reaward=False
    )
    assert not no_retry.satisfied and [a.status for a in no_retry.awards] == ["error"]


async def test_contract_net_with_two_awards_and_with_no_bidders(rt):
    for n, s in (("a", 1), ("b", 2), ("c", 3)):
        bidder(rt, n, s)
    two = await collab.contract_net("t", "thread.cnp.test.broadcast", window=0.1, max_awards=2, expected=3)
    assert sorted(w.bidder for w in two.winners) == ["agent.b", "agent.c"] and two.rejected == ("agent.a",)
    empty = await collab.contract_net("t", "nobody.bids", window=0.05)
    assert not empty.satisfied and empty.proposals == [] and empty.awards == []


async def test_contract_net_scores_from_a_json_payload_and_a_custom_scorer(rt):
    from loom.collab import proposal_score

    assert proposal_score(Event.from_json("collab.proposal", {"score": 7})) == 7.0
    assert proposal_score(Event("collab.proposal", metadata={"score": "nan"})) == 0.0
    assert proposal_score(Event("collab.proposal", b"not json")) == 0.0
    bidder(rt, "cheap", 10)
    bidder(rt, "pricey", 90)
    result = await collab.contract_net(
        "t", "thread.cnp.test.broadcast", window=0.1, expected=2, score=lambda e: -float(e.metadata["score"])
    )
    assert result.winners[0].bidder == "agent.cheap"


# -- inside agents (upstream e2e_collab.rs) ------------------------------------------------


async def test_agents_on_a_thread_broadcast_answer_a_request_and_a_cfp(rt):
    async def participant(ctx, topic, event):
        thread = ctx.thread(event)
        if event.type == "collab.request":
            await ctx.reply(thread, f"hello from {ctx.agent_id}")
        elif event.type == "collab.cfp":
            await ctx.propose(thread, {"plan": ctx.agent_id}, score=0.9 if ctx.agent_id == "b" else 0.7)
        elif event.type == "collab.award":
            await ctx.reply(thread, {"done": ctx.agent_id})

    for name in ("a", "b"):
        await Agent(name, topics=["thread.e2e.broadcast"], on_event=participant).start()
    reply = await collab.request_reply("thread.e2e.broadcast", b"hi", timeout=1)
    assert reply.text().startswith("hello from")
    result = await collab.contract_net("task", "thread.e2e.broadcast", window=0.8, expected=2)
    assert "agent.b" in result.winners[0].bidder and result.winners[0].result.json() == {"done": "b"}


async def test_collaborator_uses_the_agent_inbox_without_extra_subscriptions(rt):
    responder(rt, "svc.x")
    agent = await Agent("asker", runtime=rt).start()
    before = sub_count(rt)
    reply = await agent.ctx.request(agent.ctx.new_thread(), "svc.x", b"q", timeout_ms=1000)
    assert reply.payload == b"q" and sub_count(rt) == before
    assert rt.agents["asker"].pending == {}
