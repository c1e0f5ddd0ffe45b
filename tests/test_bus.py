"""EventBus: publish/subscribe, QoS, overflow policies, backpressure, stats.

Includes the upstream scenarios of reference §1–2 rewritten for our semantics.
"""

from __future__ import annotations

import asyncio

import pytest

from loom import (
    BackpressureTimeout,
    ClosedError,
    Event,
    EventBus,
    InvalidTopic,
    Overflow,
    QoS,
    SubscriptionClosed,
    UsageError,
    WouldBlock,
)
from tests.conftest import drain


def ev(i: int | str = 0, type: str = "t") -> Event:
    return Event(type, str(i).encode())


# -- basics (upstream event_test.rs) -----------------------------------------------------


async def test_subscriber_receives_a_published_event(bus):
    sub = bus.subscribe("topic.test")
    assert await bus.publish("topic.test", ev("e1")) == 1
    topic, event = await asyncio.wait_for(sub.get(), 0.5)
    assert (topic, event.payload) == ("topic.test", b"e1")


async def test_after_unsubscribe_nothing_more_arrives(bus):
    sub = bus.subscribe("topic.test")
    await bus.publish("topic.test", ev(1))
    assert bus.unsubscribe(sub.id) is True
    assert await bus.publish("topic.test", ev(2)) == 0
    assert [d.event.payload for d in drain_all(sub)] == [b"1"]
    with pytest.raises(SubscriptionClosed):
        await sub.get()
    assert bus.unsubscribe(sub.id) is False


def drain_all(sub):
    out = []
    while True:
        try:
            out.append(sub.get_nowait())
        except (WouldBlock, SubscriptionClosed):
            return out


async def test_type_filter_delivers_only_listed_types(bus):
    sub = bus.subscribe("t", types=["type_a"])
    for e in (ev("a1", "type_a"), ev("b1", "type_b"), ev("a2", "type_a")):
        await bus.publish("t", e)
    assert [d.event.payload for d in await drain(sub)] == [b"a1", b"a2"]


async def test_type_filter_counts_exactly_half_of_alternating_types(bus):
    sub = bus.subscribe("t", types={"type_a"}, qos=QoS.BACKGROUND)
    for i in range(2000):
        await bus.publish("t", ev(i, "type_a" if i % 2 == 0 else "type_b"))
    assert sub.qsize() == 1000


async def test_publish_without_subscribers_returns_zero(bus):
    assert await bus.publish("nobody.listens", ev()) == 0
    assert bus.stats("nobody.listens").published == 1


async def test_two_subscribers_both_receive(bus):
    a, b = bus.subscribe("t"), bus.subscribe("t")
    assert await bus.publish("t", ev("x")) == 2
    assert (await a.get()).event.payload == (await b.get()).event.payload == b"x"


async def test_stats_count_publishes_and_deliveries(bus):
    sub = bus.subscribe("t")
    for i in range(10):
        await bus.publish("t", ev(i))
    st = bus.stats("t")
    assert (st.published, st.delivered, st.dropped_total, st.subscriptions, st.queue_depth) == (
        10,
        10,
        0,
        1,
        10,
    )
    assert sub.stats.delivered == 10 and sub.stats.high_water >= 10


async def test_after_close_publish_delivers_nothing_and_readers_end(bus):
    sub = bus.subscribe("t")
    await bus.publish("t", ev(1))
    await bus.aclose()
    assert await bus.publish("t", ev(2)) == 0
    assert [d.event.payload async for d in sub] == [b"1"]  # drained, then iteration ends
    assert sub.close_reason == "bus_closed"
    with pytest.raises(ClosedError):
        bus.subscribe("t")


async def test_close_wakes_a_waiting_reader(bus):
    sub = bus.subscribe("t")
    reader = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(SubscriptionClosed, match="closed"):
        await reader


# -- wildcards ---------------------------------------------------------------------------


async def test_single_segment_wildcard_receives_btc_and_eth_but_not_volume(bus):
    sub = bus.subscribe("market.price.*")
    for t in ("market.price.BTC", "market.price.ETH", "market.volume.BTC", "market.price.BTC.spot"):
        await bus.publish(t, ev(t))
    assert [d.topic for d in await drain(sub)] == ["market.price.BTC", "market.price.ETH"]


async def test_tail_wildcard_receives_any_depth(bus):
    sub = bus.subscribe("market.>")
    for t in ("market.price.BTC", "market.price.BTC.spot", "market"):
        await bus.publish(t, ev(t))
    assert [d.topic for d in await drain(sub)] == ["market.price.BTC", "market.price.BTC.spot"]


async def test_exact_and_wildcard_subscribers_each_receive_one_copy(bus):
    exact, wild = bus.subscribe("market.price.BTC"), bus.subscribe("market.price.*")
    assert await bus.publish("market.price.BTC", ev()) == 2
    assert exact.qsize() == wild.qsize() == 1


async def test_one_subscription_with_overlapping_patterns_gets_one_copy(bus):
    sub = bus.subscribe(["a.b", "a.*", "a.>"])
    assert await bus.publish("a.b", ev()) == 1
    assert sub.qsize() == 1 and sub.patterns == ("a.b", "a.*", "a.>")


async def test_patterns_can_be_added_and_removed_at_run_time(bus):
    sub = bus.subscribe("a")
    sub.add_pattern("thread.7.broadcast")
    await bus.publish("thread.7.broadcast", ev())
    assert sub.qsize() == 1
    with pytest.raises(UsageError, match="already subscribed"):
        sub.add_pattern("a")
    sub.remove_pattern("thread.7.broadcast")
    assert await bus.publish("thread.7.broadcast", ev()) == 0
    with pytest.raises(UsageError, match="not subscribed"):
        sub.remove_pattern("thread.7.broadcast")
    sub.close()
    with pytest.raises(SubscriptionClosed):
        sub.add_pattern("b")


async def test_subscribers_of_answers_who_would_receive(bus):
    a, b = bus.subscribe("market.price.*"), bus.subscribe("market.>")
    bus.subscribe("news.>")
    assert set(bus.subscribers_of("market.price.BTC")) == {a, b}


# -- REALTIME ----------------------------------------------------------------------------


async def test_realtime_drops_when_nobody_reads_and_counts_them(bus):
    sub = bus.subscribe("t", qos=QoS.REALTIME)
    for i in range(5000):
        await bus.publish("t", ev(i))
    st = bus.stats("t")
    assert st.published == 5000 and st.delivered == 512
    assert st.dropped == {"queue_full": 5000 - 512}
    assert sub.stats.dropped == {"queue_full": 4488}
    # drop_newest keeps the first 512
    assert [int(d.event.payload) for d in await drain(sub)] == list(range(512))


async def test_realtime_drop_oldest_keeps_the_latest(bus):
    sub = bus.subscribe("t", qos=QoS.REALTIME, maxsize=10, overflow="drop_oldest")
    for i in range(100):
        await bus.publish("t", ev(i))
    assert [int(d.event.payload) for d in await drain(sub)] == list(range(90, 100))
    assert sub.stats.dropped == {"drop_oldest": 90}


async def test_realtime_sample_keeps_one_in_n_above_the_high_water_mark(bus):
    sub = bus.subscribe("t", qos=QoS.REALTIME, maxsize=100, overflow=Overflow.SAMPLE, high_water=50, sample_every=5)
    for i in range(600):
        await bus.publish("t", ev(i))
    got = [int(d.event.payload) for d in await drain(sub)]
    assert got[:50] == list(range(50))  # below the mark: everything
    assert got[50:52] == [54, 59]  # above: 1 in 5
    assert len(got) == 100
    assert sub.stats.dropped["sampled"] > 0 and sub.stats.dropped["queue_full"] > 0


async def test_realtime_coalesce_keeps_the_latest_event_per_key(bus):
    sub = bus.subscribe("prices", qos=QoS.REALTIME, maxsize=3, overflow="coalesce")
    for i, sym in enumerate(["BTC", "ETH", "SOL", "BTC", "ETH", "BTC", "DOGE"]):
        await bus.publish("prices", Event(sym, str(i).encode()))
    got = [(d.event.type, int(d.event.payload)) for d in await drain(sub)]
    assert got == [("BTC", 5), ("ETH", 4), ("SOL", 2)]
    assert sub.stats.dropped == {"coalesced": 3, "queue_full": 1}


async def test_coalesce_with_a_custom_key(bus):
    sub = bus.subscribe(
        "p", qos=QoS.REALTIME, maxsize=2, overflow="coalesce", coalesce_key=lambda e: e.metadata.get("sym")
    )
    for i, sym in enumerate(["a", "b", "a", "a", "b"]):
        await bus.publish("p", Event("tick", str(i).encode(), metadata={"sym": sym}))
    assert [int(d.event.payload) for d in await drain(sub)] == [3, 4]
    # the key index follows the queue: after draining, new keys fit again
    await bus.publish("p", Event("tick", b"9", metadata={"sym": "c"}))
    assert sub.qsize() == 1


async def test_slow_batched_subscriber_does_not_delay_realtime_ones(bus):
    slow = bus.subscribe("t", qos=QoS.BATCHED, maxsize=1)
    fast = bus.subscribe("t", qos=QoS.REALTIME)
    await bus.publish("t", ev(0))  # fills `slow`
    blocked = asyncio.create_task(bus.publish("t", ev(1)))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert [d.event.payload for d in await drain(fast)] == [b"0", b"1"]  # delivered already
    await slow.get()
    assert await asyncio.wait_for(blocked, 1) == 2
    assert (await slow.get()).event.payload == b"1"


# -- BATCHED / BACKGROUND ----------------------------------------------------------------


async def test_batched_buffers_without_drop(bus):
    sub = bus.subscribe("t", qos=QoS.BATCHED)
    for i in range(500):
        await bus.publish("t", ev(i))
    st = bus.stats("t")
    assert (st.delivered, st.dropped_total, sub.qsize()) == (500, 0, 500)


async def test_batched_publisher_waits_for_room_and_order_is_kept(bus):
    sub = bus.subscribe("t", maxsize=4)
    received = []

    async def consume():
        async for _, e in sub:
            received.append(int(e.payload))
            if len(received) == 200:
                return
            await asyncio.sleep(0)

    consumer = asyncio.create_task(consume())
    for i in range(200):
        await bus.publish("t", ev(i))
    await consumer
    assert received == list(range(200))
    assert sub.stats.high_water == 4 and sub.stats.dropped == {}


async def test_publish_timeout_raises_backpressure_timeout(bus):
    sub = bus.subscribe("t", maxsize=2)
    other = bus.subscribe("t", qos=QoS.REALTIME)
    await bus.publish("t", ev(0))
    await bus.publish("t", ev(1))
    with pytest.raises(BackpressureTimeout) as info:
        await bus.publish("t", ev(2), timeout=0.05)
    err = info.value
    assert (err.topic, err.subscription_id, err.delivered) == ("t", sub.id, 1)
    assert isinstance(err, TimeoutError)
    assert other.qsize() == 3 and sub.qsize() == 2
    assert not sub._putters  # the waiter cleaned up


async def test_cancelled_publisher_leaves_no_waiter_behind(bus):
    sub = bus.subscribe("t", maxsize=1)
    await bus.publish("t", ev(0))
    p = asyncio.create_task(bus.publish("t", ev(1)))
    await asyncio.sleep(0)
    p.cancel()
    with pytest.raises(asyncio.CancelledError):
        await p
    assert not sub._putters and sub.qsize() == 1


async def test_background_takes_two_thousand_without_drop_and_reads_in_batches(bus):
    sub = bus.subscribe("t", qos=QoS.BACKGROUND)
    assert sub.maxsize == 65536
    for i in range(2000):
        await bus.publish("t", ev(i))
    sizes, seen = [], []
    async for batch in sub.batches(max_items=300):
        sizes.append(len(batch))
        seen.extend(int(d.event.payload) for d in batch)
        if len(seen) == 2000:
            break
    assert sizes == [300] * 6 + [200] and seen == list(range(2000))
    with pytest.raises(UsageError):
        await anext(sub.batches(max_items=0))


async def test_publish_nowait_never_blocks_and_counts_a_full_batched_queue(bus):
    sub = bus.subscribe("t", maxsize=1)
    assert bus.publish_nowait("t", ev(0)) == 1
    assert bus.publish_nowait("t", ev(1)) == 0
    assert sub.stats.dropped == {"queue_full": 1} and bus.stats("t").dropped == {"queue_full": 1}


# -- dead consumers ----------------------------------------------------------------------


async def test_batched_subscription_of_a_dead_consumer_is_closed_not_left_full(bus):
    sub = bus.subscribe("t", maxsize=3)

    async def consumer_that_crashes():
        async for _ in sub:
            raise RuntimeError("boom")

    task = asyncio.create_task(consumer_that_crashes())
    await asyncio.sleep(0)  # it waits on the empty queue: it is the consumer now
    await bus.publish("t", ev(0))
    with pytest.raises(RuntimeError):
        await task
    for i in range(3):
        await asyncio.wait_for(bus.publish("t", ev(i)), 1)  # fills the queue
    assert await asyncio.wait_for(bus.publish("t", ev(9)), 1) == 0  # full: detected, not blocked
    assert sub.closed and sub.close_reason == "consumer_gone"
    assert sub.stats.dropped == {"consumer_gone": 1}


async def test_a_blocked_publisher_is_released_when_the_consumer_dies(bus):
    sub = bus.subscribe("t", maxsize=1)

    async def consumer():
        await sub.get()
        await asyncio.sleep(3600)

    task = asyncio.create_task(consumer())
    await asyncio.sleep(0)
    await bus.publish("t", ev(0))
    await asyncio.sleep(0)
    await bus.publish("t", ev(1))  # queue full now
    blocked = asyncio.create_task(bus.publish("t", ev(2)))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    task.cancel()
    assert await asyncio.wait_for(blocked, 1) == 0
    assert sub.close_reason == "consumer_gone"


# -- callbacks ---------------------------------------------------------------------------


async def test_callback_subscription_runs_sync_and_async_handlers_and_counts_errors(rt):
    seen = []

    def sync_handler(topic, event):
        if event.payload == b"bad":
            raise ValueError("bad event")
        seen.append(("sync", topic, event.payload))

    async def async_handler(topic, event):
        seen.append(("async", topic, event.payload))

    s1 = rt.bus.subscribe("cb.*", callback=sync_handler)
    rt.bus.subscribe("cb.*", callback=async_handler)
    for p in (b"1", b"bad", b"2"):
        await rt.bus.publish("cb.x", Event("t", p))
    for _ in range(10):
        await asyncio.sleep(0)
    assert [s for s in seen if s[0] == "sync"] == [("sync", "cb.x", b"1"), ("sync", "cb.x", b"2")]
    assert len([s for s in seen if s[0] == "async"]) == 3
    assert s1.stats.handler_errors == 1
    assert any(t.get_name() == f"loom.bus.callback:{s1.id}" for t in rt.tasks)


# -- latency stats -----------------------------------------------------------------------


async def test_latency_is_sampled_and_summarised(bus):
    sub = bus.subscribe("t", qos=QoS.BACKGROUND)
    for i in range(640):
        await bus.publish("t", ev(i))
    await drain(sub)
    st = sub.stats
    assert st.latency_samples == 10
    assert 0 < st.latency_p50_us <= st.latency_p99_us


async def test_bus_stats_aggregate_topics_and_subscriptions(bus):
    bus.subscribe("a.*", qos=QoS.REALTIME, maxsize=1)
    for t in ("a.x", "a.x", "a.y"):
        await bus.publish(t, ev())
    st = bus.stats()
    assert (st.published, st.delivered, st.dropped, st.subscriptions) == (3, 1, {"queue_full": 2}, 1)
    assert set(st.topics) == {"a.x", "a.y"}
    assert st.subscription_stats[0].dropped_total == 2


async def test_topic_counters_are_bounded_and_fold_into_totals():
    bus = EventBus(max_topics=100)
    bus.subscribe("thread.*.reply", qos=QoS.REALTIME, maxsize=1)
    for i in range(1000):
        await bus.publish(f"thread.{i}.reply", ev())
    st = bus.stats()
    assert len(st.topics) == 100 and st.published == 1000 and st.delivered + st.dropped_total == 1000
    await bus.aclose()


# -- pressure (upstream event_pressure_test.rs, counts not timings) ------------------------


async def test_ten_thousand_events_single_publisher_single_consumer(bus):
    sub = bus.subscribe("t")
    got = 0

    async def consume():
        nonlocal got
        async for _ in sub:
            got += 1
            if got == 10_000:
                return

    c = asyncio.create_task(consume())
    for i in range(10_000):
        await bus.publish("t", ev(i))
    await asyncio.wait_for(c, 5)
    assert bus.stats("t").delivered == 10_000


async def test_eight_concurrent_publishers_lose_nothing(bus):
    sub = bus.subscribe("t", maxsize=64)
    got = []

    async def consume():
        async for _, e in sub:
            got.append(e.payload)
            if len(got) == 8000:
                return

    async def produce(p):
        for i in range(1000):
            await bus.publish("t", ev(f"{p}:{i}"))

    c = asyncio.create_task(consume())
    await asyncio.gather(*(produce(p) for p in range(8)))
    await asyncio.wait_for(c, 5)
    assert len(set(got)) == 8000
    for p in range(8):  # per-publisher order is kept
        mine = [int(x.split(b":")[1]) for x in got if x.startswith(f"{p}:".encode())]
        assert mine == list(range(1000))


async def test_five_batched_subscribers_each_get_every_event(bus):
    subs = [bus.subscribe("t", maxsize=100) for _ in range(5)]
    counts = [0] * 5

    async def consume(k):
        async for _ in subs[k]:
            counts[k] += 1
            if counts[k] == 1000:
                return

    cs = [asyncio.create_task(consume(k)) for k in range(5)]
    for i in range(1000):
        await bus.publish("t", ev(i))
    await asyncio.wait_for(asyncio.gather(*cs), 5)
    assert counts == [1000] * 5


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"qos": 7}, "unknown QoS"),
        ({"overflow": "explode"}, "unknown overflow"),
        ({"maxsize": 0}, "maxsize"),
        ({"maxsize": 1.5}, "maxsize"),
        ({"types": "user.question"}, "not the string"),
        ({"types": []}, "non-empty"),
        ({"types": [""]}, "non-empty"),
        ({"sample_every": 0}, "sample_every"),
        ({"maxsize": 10, "high_water": 11}, "high_water"),
        ({"callback": "not callable"}, "callable"),
    ],
)
async def test_subscribe_rejects_bad_options(bus, kwargs, match):
    with pytest.raises(UsageError, match=match):
        bus.subscribe("t", **kwargs)
    assert bus.subscriptions() == []


async def test_subscribe_and_publish_reject_bad_topics(bus):
    with pytest.raises(InvalidTopic):
        bus.subscribe("a..b")
    with pytest.raises(UsageError, match="at least one"):
        bus.subscribe([])
    with pytest.raises(TypeError):
        bus.subscribe(None)
    for bad in ("a.*", "a.>", "", "a b", "a..b"):
        with pytest.raises(InvalidTopic):
            await bus.publish(bad, ev())
    with pytest.raises(TypeError, match="topic must be str"):
        await bus.publish(42, ev())
    with pytest.raises(TypeError, match="needs an Event"):
        await bus.publish("a", {"not": "an event"})
    with pytest.raises(TypeError, match="needs an Event"):
        bus.publish_nowait("a", b"bytes")
    assert bus.stats("a") is not None and bus.stats("a").published == 0
    with pytest.raises(InvalidTopic):
        bus.stats("a.*")


async def test_get_nowait_on_an_empty_subscription_would_block(bus):
    sub = bus.subscribe("t")
    with pytest.raises(WouldBlock):
        sub.get_nowait()
    sub.close()
    with pytest.raises(SubscriptionClosed):
        sub.get_nowait()


async def test_subscription_is_an_async_context_manager(bus):
    async with bus.subscribe("t") as sub:
        await bus.publish("t", ev())
    assert sub.closed and bus.subscriptions() == []
