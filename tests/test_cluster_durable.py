"""Durable subscriptions in a cluster: BACKGROUND QoS (or ``durable=True``) rides a JetStream durable
consumer, acked after the handler returns, delivered again after a crash, duplicates dropped by id;
REALTIME/BATCHED stay on core NATS."""

from __future__ import annotations

import asyncio
import collections

import pytest

import loom
from loom.cluster import NatsServer
from tests.conftest import until
from tests.peers import cluster_procs as procs

pytestmark = pytest.mark.slow


@pytest.fixture
def nats_url():
    with NatsServer() as server:  # a fresh server: no stream or consumer left from another test
        yield server.url


async def _consumer(rt: loom.Loom, name_part: str) -> object:
    js = rt.cluster.nc.jetstream()
    names = [c.name for c in await js.consumers_info("LOOM") if name_part in c.name]
    assert len(names) == 1, names
    return await js.consumer_info("LOOM", names[0])


async def _knows_durable(rt: loom.Loom, topic: str) -> None:
    await until(lambda: rt.cluster.durable_export is not None and rt.cluster.durable_export.covers(topic), timeout=10)


async def test_a_background_agent_acks_after_its_handler_and_a_stopped_one_leaves_its_event_to_a_replica(nats_url):
    release, seen_a, seen_b = asyncio.Event(), [], []

    async def stuck(ctx, topic, event):
        seen_a.append(event.id)
        await release.wait()  # never set: the runtime stops with the handler running

    async def quick(ctx, topic, event):
        seen_b.append(event.id)

    async with loom.Loom(name="pub", native_tools=()) as pub:
        await pub.join_cluster(nats_url, heartbeat_s=0.2)
        a = await loom.Loom(name="a", native_tools=()).start()
        try:
            await a.join_cluster(nats_url, heartbeat_s=0.2)
            await loom.Agent("w", ["jobs.*"], on_event=stuck, runtime=a, qos=loom.QoS.BACKGROUND).start()
            feed = next(iter(a.cluster.feeds.feeds.values()))
            await until(lambda: feed.started.is_set())
            assert not feed.error and feed.name.startswith("loom-w-")
            await _knows_durable(pub, "jobs.1")  # the publisher learned it from the shared directory
            event = loom.Event("job", b"1")
            await pub.bus.publish("jobs.1", event)
            await until(lambda: seen_a == [event.id], timeout=10)
            info = await _consumer(a, "loom-w-")
            assert info.num_ack_pending == 1  # handed over, handler still running: not acked
        finally:
            await a.stop()  # the handler is cancelled: its event is given back (nak), not acked
        async with loom.Loom(name="b", native_tools=()) as b:
            await b.join_cluster(nats_url, heartbeat_s=0.2)
            await loom.Agent("w", ["jobs.*"], on_event=quick, runtime=b, qos=loom.QoS.BACKGROUND).start()
            await until(lambda: seen_b == [event.id], timeout=10)  # the same consumer: the replica takes it
            info = await _consumer(b, "loom-w-")
            await until(lambda: b.agents["w"].handled == 1)
            for _ in range(50):
                info = await _consumer(b, "loom-w-")
                if info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.05)
            assert info.num_ack_pending == 0 and info.num_pending == 0
            assert pub.cluster.durable_export.stats()["lost"] == 0


async def test_a_local_publish_reaches_the_durable_agent_once_through_the_stream_and_others_directly(nats_url):
    handled: collections.Counter[str] = collections.Counter()

    async def count(ctx, topic, event):
        handled[event.id] += 1

    async with loom.Loom(name="solo", native_tools=()) as rt:
        await rt.join_cluster(nats_url, share_directory=False)
        plain = rt.bus.subscribe("d.*")  # BATCHED: not durable, served by the bus as always
        await loom.Agent("d", ["d.*"], on_event=count, runtime=rt, durable=True).start()
        await until(lambda: next(iter(rt.cluster.feeds.feeds.values())).started.is_set())
        ids = []
        for i in range(20):
            event = loom.Event("d", str(i).encode())
            ids.append(event.id)
            await rt.bus.publish(f"d.{i % 3}", event)
        await until(lambda: set(handled) == set(ids), timeout=10)
        await asyncio.sleep(0.3)  # nothing more arrives
        assert all(n == 1 for n in handled.values()), handled
        direct = [plain.get_nowait().event.id for _ in range(plain.qsize())]
        assert direct == ids  # the plain subscriber got each once, from the bus, in order
        assert rt.cluster.durable_export.stats()["acked"] == 20


async def test_realtime_and_batched_ride_core_nats_and_a_re_sent_event_is_handled_once(nats_url):
    handled: list[str] = []

    async def take(topic, event):
        handled.append(event.id)

    async with loom.Loom(name="c", native_tools=()) as c, loom.Loom(name="p", native_tools=()) as p:
        await c.join_cluster(nats_url, heartbeat_s=0.2)
        await p.join_cluster(nats_url, heartbeat_s=0.2)
        c.bus.subscribe("rt.*", qos=loom.QoS.REALTIME)
        c.bus.subscribe("rt.*")
        assert not c.cluster.feeds.feeds  # at-most-once on core NATS, as before
        sub = c.bus.subscribe("bg.*", qos=loom.QoS.BACKGROUND, callback=take, name="taker")
        await until(lambda: sub.id in c.cluster.feeds.feeds and c.cluster.feeds.feeds[sub.id].started.is_set())
        await _knows_durable(p, "bg.x")
        event = loom.Event("once", b"x")
        await p.bus.publish("bg.x", event)
        await p.cluster.send("bg.x", event)  # the same event again (its id is the Nats-Msg-Id): the stream keeps one
        await p.cluster.durable_export.flush(5)
        await until(lambda: handled == [event.id], timeout=10)
        await asyncio.sleep(0.3)
        assert handled == [event.id]
        stats = p.cluster.durable_export.stats()
        assert stats["duplicate_acks"] == 1 and stats["lost"] == 0
        info = await _consumer(c, "-taker-")  # a callback subscription's own consumer (the node in its name)
        assert info.num_ack_pending == 0  # the callback returned: acked


async def test_a_failing_handler_is_acked_not_redelivered_forever(nats_url):
    calls: list[str] = []

    async def broken(ctx, topic, event):
        calls.append(event.id)
        raise RuntimeError("boom")

    async with loom.Loom(name="f", native_tools=()) as rt:
        await rt.join_cluster(nats_url, share_directory=False, ack_wait=1.0)
        await loom.Agent("f", ["f.*"], on_event=broken, runtime=rt, qos=loom.QoS.BACKGROUND).start()
        await until(lambda: next(iter(rt.cluster.feeds.feeds.values())).started.is_set())
        await rt.bus.publish("f.1", loom.Event("x"))
        await until(lambda: len(calls) == 1, timeout=10)
        await asyncio.sleep(1.5)  # past ack_wait: no redelivery
        assert len(calls) == 1 and rt.agents["f"].failed == 1
        assert (await _consumer(rt, "loom-f-")).num_ack_pending == 0


async def test_background_workers_lose_nothing_when_one_is_killed(nats_url):
    # No --durable flag and no durable= on the publisher: the agent's BACKGROUND QoS decides, and the
    # publisher learns from the shared directory that the subjects go through the stream.
    workers = await asyncio.gather(
        *(procs.worker(nats_url, "tests.peers.cluster_agents:background", LOOM_WORK_MS="5") for _ in range(3))
    )
    try:
        async with loom.Loom(name="hub", native_tools=()) as rt:
            await rt.join_cluster(nats_url, heartbeat_s=0.2)
            await _knows_durable(rt, "bg.in.1")
            done = rt.bus.subscribe("work.done", maxsize=10_000)
            ids: list[str] = []
            for i in range(200):
                if i == 100:
                    workers[0].kill()  # with events handed over and not done: delivered again to the others
                event = loom.Event("work", str(i).encode())
                ids.append(event.id)
                await rt.bus.publish(f"bg.in.{i % 7}", event)
                await asyncio.sleep(0.001)
            assert await rt.cluster.durable_export.flush(10)
            assert rt.cluster.durable_export.stats()["lost"] == 0
            handled = await procs.reports_by_id(done, ids, timeout=60)
            assert set(handled) == set(ids)  # at-least-once, across the crash
            assert sum(handled.values()) - len(ids) <= 16  # again at most the window the dead one held
    finally:
        await procs.stop_all(workers)


async def test_a_new_durable_subscriber_starts_now_and_an_existing_one_resumes(nats_url):
    first: list[bytes] = []
    later: list[bytes] = []
    plain: list[bytes] = []

    async def old(ctx, topic, event):
        first.append(event.payload)

    async def new(ctx, topic, event):
        later.append(event.payload)

    def fed(rt: loom.Loom, agent_id: str) -> bool:
        mailbox = rt.agents[agent_id].mailbox
        return any(f.sub is mailbox and f.started.is_set() for f in rt.cluster.feeds.feeds.values())

    async with loom.Loom(name="h", native_tools=()) as rt:
        await rt.join_cluster(nats_url, share_directory=False)
        await loom.Agent("old", ["hist.*"], on_event=old, runtime=rt, durable=True).start()
        plain_sub = rt.bus.subscribe("hist.*", durable=True, callback=lambda t, e: plain.append(e.payload))
        await until(lambda: fed(rt, "old") and rt.cluster.feeds.feeds[plain_sub.id].started.is_set())
        for i in range(5):
            await rt.bus.publish("hist.x", loom.Event("h", str(i).encode()))
        await until(lambda: len(first) == 5 and len(plain) == 5, timeout=10)
        await rt.agents.delete("old")  # an agent's consumer stays: it resumes where it stopped
        plain_sub.close()  # any other subscription's consumer goes with it
        await until(lambda: len(rt.cluster.feeds.feeds) == 0)
        await rt.bus.publish("hist.x", loom.Event("h", b"while away"))
        await loom.Agent("old", ["hist.*"], on_event=old, runtime=rt, durable=True).start()
        await loom.Agent("new", ["hist.*"], on_event=new, runtime=rt, durable=True).start()
        await until(lambda: fed(rt, "old") and fed(rt, "new"))
        await rt.bus.publish("hist.x", loom.Event("h", b"now"))
        await until(lambda: first[-1:] == [b"now"] and later == [b"now"], timeout=10)
        assert first == [b"0", b"1", b"2", b"3", b"4", b"while away", b"now"]  # resumed, nothing missed
        assert later == [b"now"]  # a new subscriber does not replay the stream's history
        names = [c.name for c in await rt.cluster.nc.jetstream().consumers_info("LOOM")]
        assert sorted(n.split("-")[1] for n in names) == ["new", "old"]  # the plain one's was deleted


async def test_without_jetstream_a_background_agent_keeps_its_bus_delivery(caplog):
    got: list[bytes] = []

    async def take(ctx, topic, event):
        got.append(event.payload)

    with NatsServer(jetstream=False) as server:
        async with loom.Loom(name="nojs", native_tools=()) as rt, loom.Loom(name="other", native_tools=()) as other:
            await rt.join_cluster(server.url, share_directory=False)
            await other.join_cluster(server.url, share_directory=False)
            await loom.Agent("b", ["nj.*"], on_event=take, runtime=rt, qos=loom.QoS.BACKGROUND).start()
            feed = next(iter(rt.cluster.feeds.feeds.values()), None)
            if feed is not None:
                await asyncio.wait_for(feed.started.wait(), 15)
            await until(lambda: not rt.cluster.feeds.feeds, timeout=15)  # refused, dropped
            assert "cannot serve durable subscription" in caplog.text
            await rt.bus.publish("nj.local", loom.Event("x", b"local"))
            await other.bus.publish("nj.remote", loom.Event("x", b"remote"))
            await until(lambda: sorted(got) == [b"local", b"remote"], timeout=10)  # at-most-once, as before


# -- what review found (each reproduced first) ---------------------------------------------
def _started(rt: loom.Loom, sub: object) -> bool:
    feeds = rt.cluster.feeds.feeds
    return sub.id in feeds and feeds[sub.id].started.is_set()


async def test_only_readers_that_ack_are_fed_and_a_burst_from_an_unaware_sender_arrives_whole(nats_url, tmp_path):
    # A plain BACKGROUND iterator (the recorder is one) never says done: fed, it would stop after
    # `window` events. And a sender that does not know a subject is durable batches a burst.
    got, taken = [], []
    db = str(tmp_path / "rec.db")
    recording = loom.Loom(name="a", native_tools=(), record=db, record_topics=["jobs.>"])
    async with recording as a, loom.Loom(name="p", native_tools=()) as p:
        await a.join_cluster(nats_url, heartbeat_s=0.2)
        await p.join_cluster(nats_url, share_directory=False)  # never learns what is durable
        plain = a.bus.subscribe("jobs.*", qos=loom.QoS.BACKGROUND, maxsize=1000)
        fed = a.bus.subscribe("jobs.*", qos=loom.QoS.BACKGROUND, callback=lambda t, e: taken.append(e.id))
        await until(lambda: _started(a, fed))
        assert list(a.cluster.feeds.feeds) == [fed.id]  # not the iterator, not the recorder
        ids = []
        for i in range(200):
            event = loom.Event("j", str(i).encode())
            ids.append(event.id)
            await p.bus.publish("jobs.x", event)
        await until(lambda: sorted(taken) == sorted(ids), timeout=15)
        assert p.cluster.counts.batches >= 1  # it went out batched, and the feed took the batches apart
        got = [plain.get_nowait().event.id for _ in range(plain.qsize())]
        assert got == ids
        await until(lambda: a.recorder.stats.recorded >= 200)


async def test_feeds_of_subscriptions_made_before_joining_start_together_and_quickly(nats_url):
    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    async with loom.Loom(name="r", native_tools=()) as rt:
        for k in got:
            rt.bus.subscribe(f"{k}.*", durable=True, callback=lambda t, e, k=k: got[k].append(e.id))
        began = asyncio.get_running_loop().time()
        await rt.join_cluster(nats_url, share_directory=False)
        assert asyncio.get_running_loop().time() - began < 5  # joined means bound, not "when the feeds end"
        assert len(rt.cluster.feeds.feeds) == 3 and all(f.started.is_set() for f in rt.cluster.feeds.feeds.values())
        info = await rt.cluster.nc.jetstream().stream_info("LOOM")
        assert sorted(info.config.subjects) == ["a.*", "b.*", "c.*"]  # none lost to a concurrent update
        for k in got:
            await rt.bus.publish(f"{k}.x", loom.Event(k))
        await until(lambda: all(len(v) == 1 for v in got.values()), timeout=10)
        assert rt.cluster.durable_export.stats()["lost"] == 0


async def test_types_removed_patterns_leaving_and_forwarding(nats_url):
    seen: list[tuple[str, str]] = []
    out: list[str] = []

    async def handle(ctx, topic, event):
        seen.append((topic, event.type))
        if event.type == "forward":
            await rt.bus.publish("out.x", event)  # the same event object: it must still be exported

    async with loom.Loom(name="a", native_tools=()) as rt, loom.Loom(name="b", native_tools=()) as b:
        await rt.join_cluster(nats_url, share_directory=False)
        await b.join_cluster(nats_url, share_directory=False)
        b.bus.subscribe("out.*", callback=lambda t, e: out.append(e.type))
        rt.bus.subscribe("ty.*", durable=True, types=["wanted"], callback=lambda t, e: seen.append((t, e.type)))
        await loom.Agent("rp", ["rp.a", "rp.b"], on_event=handle, runtime=rt, qos=loom.QoS.BACKGROUND).start()
        feeds = rt.cluster.feeds.feeds  # both bound (before that, an event may come both ways)
        await until(lambda: len(feeds) == 2 and all(f.started.is_set() for f in feeds.values()))
        rt.agents.unsubscribe("rp", "rp.b")
        for topic, etype in (("ty.x", "other"), ("ty.x", "wanted"), ("rp.b", "gone"), ("rp.a", "forward")):
            await rt.bus.publish(topic, loom.Event(etype))
        await until(lambda: ("rp.a", "forward") in seen and out == ["forward"], timeout=10)
        await asyncio.sleep(0.3)
        assert sorted(seen) == [("rp.a", "forward"), ("ty.x", "wanted")]  # no other type, no removed pattern
        await rt.leave_cluster()  # the subscriptions are the bus's again
        await rt.bus.publish("rp.a", loom.Event("after"))
        await until(lambda: ("rp.a", "after") in seen)


async def test_an_event_too_big_for_the_server_stays_local_and_reaches_durable_subscribers(nats_url):
    got: list[int] = []
    async with loom.Loom(name="lg", native_tools=()) as rt:
        await rt.join_cluster(nats_url, share_directory=False)
        sub = rt.bus.subscribe("big.*", qos=loom.QoS.BACKGROUND, callback=lambda t, e: got.append(len(e.payload)))
        await until(lambda: _started(rt, sub))
        await rt.bus.publish("big.x", loom.Event("b", b"x" * 2_000_000))
        await until(lambda: got == [2_000_000], timeout=10)
        assert rt.cluster.counts.too_large == 1 and rt.cluster.durable_export.stats()["lost"] == 0


async def test_a_handler_slower_than_ack_wait_keeps_its_event(nats_url):
    runs: list[str] = []

    async def slow(ctx, topic, event):
        runs.append(ctx.agent.agent_id if hasattr(ctx, "agent") else "?")
        await asyncio.sleep(2.5)  # more than ack_wait: in_progress keeps it from going to the replica

    async with loom.Loom(name="s1", native_tools=()) as s1, loom.Loom(name="s2", native_tools=()) as s2:
        for rt in (s1, s2):
            await rt.join_cluster(nats_url, share_directory=False, ack_wait=1.0)
            await loom.Agent("slow", ["sl.*"], on_event=slow, runtime=rt, qos=loom.QoS.BACKGROUND).start()
            await until(lambda rt=rt: next(iter(rt.cluster.feeds.feeds.values())).started.is_set())
        await s1.bus.publish("sl.x", loom.Event("long"))
        await until(lambda: s1.agents["slow"].handled + s2.agents["slow"].handled == 1, timeout=10)
        await asyncio.sleep(1.5)
        assert len(runs) == 1  # handled once: not handed to the other replica meanwhile
