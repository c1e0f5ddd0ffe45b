"""Subscription: what ``bus.subscribe`` returns: patterns, a QoS policy and a bounded queue.

A subscription may cover several patterns (an agent's mailbox does); an event matching more
than one of them is queued once. Offers never wait: below the policy's threshold an offer is
one append; at or above it :meth:`Subscription._offer_slow` applies the QoS and overflow rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from loom.events.event import Event
from loom.events.qos import DropReason, Overflow, QoS
from loom.events.queue import _LATENCY_SAMPLE_MASK, Delivery, DeliveryQueue, _new_delivery
from loom.events.stats import SubscriptionStats

if TYPE_CHECKING:
    from loom.events.bus import EventBus, _Route

__all__ = ["Delivery", "Subscription"]

log = logging.getLogger("loom.bus")


def _type_key(event: Event) -> Hashable:
    return event.type


class Subscription(DeliveryQueue):
    """A bounded, policy-governed queue of :class:`Delivery` items. Create with ``bus.subscribe``.

    Iterate with ``async for topic, event in sub`` (or ``await sub.get()``); the iteration ends
    when the subscription is closed and its queue is drained.
    """

    __slots__ = (
        "__weakref__",
        "_bus",
        "_dropped",
        "_handler_errors",
        "_hw",
        "_intercept",
        "_overflow",
        "_patterns",
        "_sample_every",
        "_sample_seen",
        "_types",
        "durable",
        "name",
        "on_done",
        "qos",
    )

    def __init__(
        self,
        bus: EventBus,
        sub_id: str,
        *,
        qos: QoS,
        maxsize: int,
        overflow: Overflow,
        types: frozenset[str] | None,
        sample_every: int,
        high_water: int,
        coalesce_key: Callable[[Event], Hashable] | None,
        intercept: Callable[[Delivery], bool] | None = None,
        durable: bool = False,
        name: str = "",
    ) -> None:
        super().__init__(sub_id, maxsize)
        self._bus = bus
        self.qos = qos
        self.name = name
        self.durable = durable
        """At-least-once where the runtime is in a cluster: its events then come through a JetStream
        consumer (docs/scale-out.md), each acknowledged once its reader calls :meth:`done`."""
        self.on_done: Callable[[Event], None] | None = None  # set by whoever feeds it acknowledged events
        self._overflow = overflow
        self._types = types
        self._patterns: list[str] = []
        self._dropped: dict[str, int] = {}
        self._handler_errors = 0
        self._sample_every = sample_every
        self._sample_seen = 0
        self._intercept = intercept
        # Below `_hw` an offer is one append; at or above it `_offer_slow` applies the policy.
        if qos is QoS.REALTIME and overflow is Overflow.COALESCE:
            self._keys = {}
            self._coalesce_key = coalesce_key or _type_key
            self._hw = 0
        elif qos is QoS.REALTIME and overflow is Overflow.SAMPLE:
            self._hw = high_water
        else:
            self._hw = maxsize

    def _sampled(self, ns: int) -> None:
        inst = self._bus.instruments
        if inst.tracer is not None:  # one delivery in 64: the delivery-latency histogram
            inst.record("loom.bus.delivery_latency", ns / 1e6, {"loom.qos": self.qos.name})

    # -- properties ----------------------------------------------------------------------
    @property
    def patterns(self) -> tuple[str, ...]:
        """The patterns this subscription receives."""
        return tuple(self._patterns)

    @property
    def types(self) -> frozenset[str] | None:
        """The event types it accepts (``None`` = all)."""
        return self._types

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def overflow(self) -> Overflow:
        return self._overflow

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> SubscriptionStats:
        """A snapshot of this subscription's counters (computed on read)."""
        p50, p99, n = self._latency_summary()
        return SubscriptionStats(
            id=self.id,
            patterns=tuple(self._patterns),
            qos=self.qos,
            maxsize=self._maxsize,
            delivered=self._delivered,
            dropped=dict(self._dropped),
            depth=len(self._queue),
            high_water=self._high_water,
            latency_p50_us=p50,
            latency_p99_us=p99,
            latency_samples=n,
            handler_errors=self._handler_errors,
            closed=self._closed,
        )

    def done(self, event: Event) -> None:
        """The reader has handled ``event`` (its handler returned or failed). An agent's core and a
        callback subscription say so themselves; a plain reader of a subscription made with
        ``durable=True`` must (a cluster hands it a few events at a time: it waits for these). Else a no-op."""
        if self.on_done is not None:
            self.on_done(event)

    @property
    def intercept(self) -> Callable[[Delivery], bool] | None:
        return self._intercept

    def divert(self, covers: Callable[[str], bool]) -> Callable[[], None]:
        """Until the returned undo is called, bus deliveries on topics ``covers`` accepts are taken
        (counted delivered) and not queued: whoever called this queues those events itself with
        :meth:`feed` (a cluster's durable consumer: each event once, wherever it was published)."""
        inner = self._intercept

        def diverted(item: Delivery) -> bool:
            return (inner is not None and inner(item)) or covers(item.topic)

        def undo() -> None:
            if self._intercept is diverted:
                self._intercept = inner

        self._intercept = diverted
        return undo

    async def feed(self, topic: str, event: Event, intercept: Callable[[Delivery], bool] | None = None) -> int:
        """Queue an event that did not come through the bus, if it is of a type this subscription takes
        and ``intercept`` (the one before :meth:`divert`) does not consume it. Waits for room.
        Returns 1 queued, -1 taken by ``intercept``, 0 refused (another type; closed)."""
        if self._types is not None and event.type not in self._types:
            return 0
        item = _new_delivery(Delivery, (topic, event))
        if intercept is not None and intercept(item):
            return -1
        return await self._put_wait(item)

    # -- pattern management (delegates to the bus index) ---------------------------------
    def add_pattern(self, pattern: str) -> None:
        """Also receive events on ``pattern``.

        Raises:
            InvalidTopic: malformed pattern.
            UsageError: already subscribed to exactly this pattern.
            SubscriptionClosed: the subscription is closed.
        """
        self._bus._add_pattern(self, pattern)

    def remove_pattern(self, pattern: str) -> None:
        """Stop receiving events on ``pattern`` (queued ones stay).

        Raises:
            UsageError: not subscribed to exactly this pattern.
        """
        self._bus._remove_pattern(self, pattern)

    # -- producer side (called by the bus) -----------------------------------------------
    def _offer(self, item: Delivery, route: _Route) -> int:
        """Queue without waiting: 1 = queued, 0 = dropped, -1 = full, the caller must wait."""
        if self._intercept is not None and self._intercept(item):
            self._delivered += 1  # consumed before queueing (e.g. a reply a request awaits)
            return 1
        q = self._queue
        depth = len(q)
        if depth < self._hw:
            q.append(item)
            if depth >= self._high_water:
                self._high_water = depth + 1
            self._delivered += 1
            if not self._delivered & _LATENCY_SAMPLE_MASK:
                self._samples.append((self._head + depth, time.perf_counter_ns()))
            if self._getters:
                self._wake(self._getters)
            return 1
        return self._offer_slow(item, route)

    def _offer_slow(self, item: Delivery, route: _Route) -> int:
        q = self._queue
        depth = len(q)
        full = depth >= self._maxsize
        if full and self._consumer is not None and self._consumer.done():
            # Whoever read this subscription is gone and the queue is full: close it instead of
            # holding the publisher (BATCHED) or counting drops forever (REALTIME).
            self._count_drop(DropReason.CONSUMER_GONE, route)
            self._bus._close_subscription(self, "consumer_gone")
            return 0
        if self.qos is not QoS.REALTIME:
            if not full:
                return self._append(item)
            if self._held is not None:
                return self._drop_held(item, route)
            return -1
        policy = self._overflow
        if policy is Overflow.COALESCE:
            # The queue never holds two events with the same key: a newer one takes the older's place.
            key = self._coalesce_key(item.event)  # type: ignore[misc]
            keys = self._keys
            assert keys is not None
            idx = keys.get(key)
            if idx is not None:
                q[idx - self._head] = item
                self._count_drop(DropReason.COALESCED, route)
                return 1
            if full:
                self._count_drop(DropReason.QUEUE_FULL, route)
                return 0
            keys[key] = self._head + depth
            return self._append(item)
        if full:
            if policy is Overflow.DROP_OLDEST:
                self._pop_evicted()
                self._count_drop(DropReason.DROP_OLDEST, route)
                return self._append(item)
            self._count_drop(DropReason.QUEUE_FULL, route)
            return 0
        # SAMPLE, between the high-water mark and full: keep 1 in N.
        self._sample_seen += 1
        if self._sample_seen % self._sample_every == 0:
            return self._append(item)
        self._count_drop(DropReason.SAMPLED, route)
        return 0

    def _count_drop(self, reason: DropReason | str, route: _Route | None, n: int = 1) -> None:
        key = str(reason)  # plain str keys: readable reprs and JSON
        self._dropped[key] = self._dropped.get(key, 0) + n
        if route is not None:
            route.dropped[key] = route.dropped.get(key, 0) + n

    def _consumer_gone(self, waiting_publishers: int) -> None:
        # The waiting publishers wake to a closed queue and count their events (consumer_gone).
        self._bus._close_subscription(self, "consumer_gone")

    def _drop_held(self, item: Delivery, route: _Route | None = None) -> int:
        reason = self._held
        assert reason is not None
        self._count_drop(reason, route if route is not None else self._bus._routes.get(item.topic))
        return 0

    async def _run_callback(self, callback: Callable[[str, Event], Any]) -> None:
        """Consume this subscription with ``callback`` (a task the bus's owner runs): errors are
        logged and counted in ``handler_errors``, delivery goes on; closed when it ends."""
        is_async = asyncio.iscoroutinefunction(callback) or asyncio.iscoroutinefunction(
            getattr(callback, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        try:
            async for topic, event in self:
                try:
                    if is_async:
                        await callback(topic, event)
                    else:
                        result = callback(topic, event)
                        if asyncio.iscoroutine(result):
                            await result
                except Exception:
                    self._handler_errors += 1
                    log.exception("subscription %s callback failed on %s (%s)", self.id, topic, event.type)
                if self.on_done is not None:
                    self.on_done(event)
        finally:
            self._bus._close_subscription(self, self.close_reason or "closed")

    # -- lifecycle -----------------------------------------------------------------------
    def hold(self, reason: DropReason | str) -> None:
        """Until :meth:`release`, a full BATCHED/BACKGROUND queue drops new events (counted as
        ``reason``) instead of making publishers wait, and publishers already waiting drop theirs:
        for a consumer that is away for a while (a bridged agent reconnecting). REALTIME keeps
        its overflow policy."""
        self._held = str(reason)
        putters = self._putters
        while putters:
            fut = putters.popleft()
            if not fut.done():
                fut.set_result(None)

    def release(self) -> None:
        """End :meth:`hold`: publishers wait for room again."""
        self._held = None

    @property
    def held(self) -> str | None:
        """The drop reason while held, else ``None``."""
        return self._held

    def close(self, *, discard: DropReason | str | None = None) -> int:
        """Stop deliveries. Queued events can still be read, then iteration ends; with ``discard``
        they are dropped instead, each counted with that reason (nobody will read them), as are
        the events of publishers still waiting for room. Returns how many were discarded. Idempotent."""
        if discard is not None and not self._closed:
            self._held = str(discard)  # what waiting publishers count their events as
        self._bus._close_subscription(self, "closed")
        return self.discard(discard) if discard is not None else 0

    def discard(self, reason: DropReason | str) -> int:
        """Drop everything queued, counting each event as dropped with ``reason`` (on this
        subscription and on its topic). Returns how many."""
        n = 0
        while self._queue:
            self.count_drop(reason, self._pop().topic)
            n += 1
        return n

    def count_drop(self, reason: DropReason | str, topic: str | None = None) -> None:
        """Count one event as dropped with ``reason`` on this subscription (and on ``topic``'s
        counters when given): for owners that drop what they took from it (the bridge's sessions)."""
        self._count_drop(reason, self._bus._routes.get(topic) if topic else None)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"closed:{self.close_reason}" if self._closed else f"{len(self._queue)}/{self._maxsize}"
        return f"<Subscription {self.id} {list(self._patterns)} {self.qos.name} {state}>"
