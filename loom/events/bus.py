"""EventBus: topic-pattern publish/subscribe with per-subscription QoS.

The path of one event (see docs/architecture.md): ``publish(topic, event)`` looks the topic up
in a route cache (validated once, then one dict hit); on a miss the segment trie computes the
matching subscriptions. Each subscription gets a non-blocking offer first, so REALTIME
subscribers never wait behind a slow BATCHED one; the publisher then awaits room only in the
BATCHED/BACKGROUND queues that were full.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

from loom._supervisor import Supervisor
from loom.errors import BackpressureTimeout, ClosedError, SubscriptionClosed, UsageError
from loom.events.event import Event
from loom.events.observed import _TRACED, BusTelemetry
from loom.events.qos import DEFAULT_MAXSIZE, DropReason, Overflow, QoS
from loom.events.queue import _new_delivery
from loom.events.stats import BusStats, TopicStats, _Route, bus_snapshot, topic_snapshot
from loom.events.subscription import Delivery, Subscription
from loom.events.topics import TopicIndex, validate_pattern, validate_topic
from loom.telemetry.seam import Instruments

__all__ = ["EventBus"]

log = logging.getLogger("loom.bus")

Callback = Callable[[str, Event], Awaitable[None] | None]


class EventBus(BusTelemetry):
    """Publish/subscribe over dot-separated topics with ``*`` / ``>`` patterns and QoS.

    Args:
        supervisor: owner of callback-subscription tasks (a fresh one when omitted).
        max_topics: how many topics keep their own counters; the oldest are folded into the
            bus totals beyond that (topics like ``thread.<id>.reply`` are unbounded).
        on_pattern: ``fn(pattern, present)`` called when a pattern gains its first subscription
            (``True``) or loses its last one (``False``): a bus that mirrors a remote one (the
            bridge client's) asks the remote side for exactly the patterns it serves.
        instruments: the runtime's :class:`~loom.telemetry.seam.Instruments` (a fresh one when
            omitted); unless already bound elsewhere, its notes are published on this bus.
            With telemetry on each publish is a span (:mod:`loom.events.observed`).
    """

    name = "bus"

    def __init__(
        self,
        *,
        supervisor: Supervisor | None = None,
        max_topics: int = 10_000,
        on_pattern: Callable[[str, bool], None] | None = None,
        instruments: Instruments | None = None,
    ) -> None:
        self._owns_supervisor = supervisor is None
        self._supervisor = supervisor or Supervisor("loom.bus")
        self._index: TopicIndex[Subscription] = TopicIndex()
        self._subs: dict[str, Subscription] = {}
        self._routes: dict[str, _Route] = {}
        self._gen = 0
        self._next_id = 0
        self._closed = False
        self._max_topics = max_topics
        self._evicted = _Route("<evicted>")
        self._callback_tasks: weakref.WeakValueDictionary[str, asyncio.Task[Any]] = weakref.WeakValueDictionary()
        self._on_pattern = on_pattern
        self.on_durable: Callable[[Subscription], None] | None = None  # told of each durable subscription
        self.instruments = instruments or Instruments()
        self._instrument()

    # -- subscribe -----------------------------------------------------------------------
    def subscribe(
        self,
        pattern: str | Iterable[str],
        *,
        qos: QoS | int = QoS.BATCHED,
        types: Iterable[str] | None = None,
        maxsize: int | None = None,
        overflow: Overflow | str = Overflow.DROP_NEWEST,
        callback: Callback | None = None,
        sample_every: int = 10,
        high_water: int | None = None,
        coalesce_key: Callable[[Event], Hashable] | None = None,
        intercept: Callable[[Delivery], bool] | None = None,
        name: str | None = None,
        durable: bool | None = None,
    ) -> Subscription:
        """Subscribe to one pattern or several (an event matching several is queued once).

        Args:
            pattern: ``"a.b"``, ``"a.*"``, ``"a.>"``, or an iterable of such patterns.
            qos: :class:`QoS` (or its int value).
            types: only deliver events whose ``type`` is in this set (``None`` = all).
            maxsize: queue bound (default 512 / 2048 / 65 536 by QoS).
            overflow: REALTIME policy when full (:class:`Overflow`); ignored otherwise.
            callback: ``fn(topic, event)`` (sync or async) run for each delivery by a task the
                bus owns; its exceptions are logged and counted in ``stats.handler_errors``.
            sample_every: SAMPLE policy: keep 1 in N above the high-water mark.
            high_water: SAMPLE policy: depth where sampling starts (default 80 % of maxsize).
            coalesce_key: COALESCE policy: key of an event (default: its type).
            intercept: ``fn(delivery) -> bool`` run synchronously before queueing; ``True``
                means it consumed the delivery (counted as delivered, never queued). Agents use
                it so a reply their pending request awaits does not wait behind the mailbox.
            name: label for the subscription id (``sub-<n>-<name>``).
            durable: at-least-once in a cluster; the reader acks with ``sub.done(event)`` (default: a
                BACKGROUND callback subscription, which acks after the callback returns).

        Raises:
            TypeError / InvalidTopic: malformed pattern.
            UsageError: bad QoS, maxsize, overflow, types or sampling values.
            ClosedError: the bus is closed.
        """
        if self._closed:
            raise ClosedError("the event bus is closed")
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        if not patterns:
            raise UsageError("subscribe() needs at least one pattern")
        for p in patterns:
            validate_pattern(p)
        try:
            qos = QoS(qos)
        except ValueError:
            raise UsageError(f"unknown QoS {qos!r}; use one of {[q.name for q in QoS]}") from None
        try:
            overflow = Overflow(overflow)
        except ValueError:
            raise UsageError(
                f"unknown overflow policy {overflow!r}; use one of {[o.value for o in Overflow]}"
            ) from None
        if maxsize is None:
            maxsize = DEFAULT_MAXSIZE[qos]
        if maxsize.__class__ is not int or maxsize < 1:
            raise UsageError(f"maxsize must be a positive int, got {maxsize!r}")
        if isinstance(types, str):
            raise UsageError(f"types must be an iterable of event types, not the string {types!r}")
        type_set = frozenset(types) if types is not None else None
        if type_set is not None and (not type_set or not all(isinstance(t, str) and t for t in type_set)):
            raise UsageError(f"types must be a non-empty collection of non-empty strings, got {types!r}")
        if sample_every.__class__ is not int or sample_every < 1:
            raise UsageError(f"sample_every must be a positive int, got {sample_every!r}")
        if high_water is None:
            high_water = max(1, (maxsize * 4) // 5)
        if high_water.__class__ is not int or not 1 <= high_water <= maxsize:
            raise UsageError(f"high_water must be an int within 1..maxsize ({maxsize}), got {high_water!r}")
        for what, fn in (("callback", callback), ("intercept", intercept)):
            if fn is not None and not callable(fn):
                raise UsageError(f"{what} must be callable, got {fn!r}")
        self._next_id += 1
        sub_id = f"sub-{self._next_id}" + (f"-{name}" if name else "")
        sub = Subscription(
            self,
            sub_id,
            qos=qos,
            maxsize=maxsize,
            overflow=overflow,
            types=type_set,
            sample_every=sample_every,
            high_water=high_water,
            coalesce_key=coalesce_key,
            intercept=intercept,
            durable=qos is QoS.BACKGROUND and callback is not None if durable is None else bool(durable),
            name=name or "",
        )
        self._subs[sub_id] = sub
        for p in dict.fromkeys(patterns):
            self._index_add(p, sub)
            sub._patterns.append(p)
        self._gen += 1
        if callback is not None:
            try:
                task = self._supervisor.spawn(sub._run_callback(callback), name=f"loom.bus.callback:{sub_id}")
            except BaseException:
                self._close_subscription(sub, "closed")
                raise
            self._callback_tasks[sub_id] = task
        if sub.durable and self.on_durable is not None:
            self.on_durable(sub)  # a cluster link serves it through JetStream
        return sub

    def _add_pattern(self, sub: Subscription, pattern: str) -> None:
        validate_pattern(pattern)
        if sub._closed:
            raise SubscriptionClosed(sub.id, sub.close_reason)
        if pattern in sub._patterns:
            raise UsageError(f"subscription {sub.id} is already subscribed to {pattern!r}")
        self._index_add(pattern, sub)
        sub._patterns.append(pattern)
        self._gen += 1

    def _remove_pattern(self, sub: Subscription, pattern: str) -> None:
        if pattern not in sub._patterns:
            raise UsageError(f"subscription {sub.id} is not subscribed to {pattern!r}")
        self._index_remove(pattern, sub)
        sub._patterns.remove(pattern)
        self._gen += 1

    def _index_add(self, pattern: str, sub: Subscription) -> None:
        if self._index.add(pattern, sub) and self._on_pattern is not None:
            self._on_pattern(pattern, True)

    def _index_remove(self, pattern: str, sub: Subscription) -> None:
        self._index.remove(pattern, sub)
        if self._on_pattern is not None and not self._index.holds(pattern):
            self._on_pattern(pattern, False)

    def patterns(self) -> list[str]:
        """The patterns some open subscription holds."""
        return sorted({p for p, _ in self._index.patterns()})

    def unsubscribe(self, subscription_id: str) -> bool:
        """Close the subscription with this id. Returns whether it existed (and was open)."""
        sub = self._subs.get(subscription_id)
        if sub is None:
            return False
        self._close_subscription(sub, "closed")
        return True

    def _close_subscription(self, sub: Subscription, reason: str) -> None:
        if self._subs.pop(sub.id, None) is not None:
            for p in sub._patterns:
                self._index_remove(p, sub)
            self._gen += 1
        sub._shutdown(reason)

    def subscriptions(self) -> list[Subscription]:
        """The open subscriptions."""
        return list(self._subs.values())

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        return self._subs.get(subscription_id)

    def has_subscribers(self, topic: str) -> bool:
        """Whether anything would receive an event on ``topic`` (one cached lookup): lets observers
        skip building events nobody reads."""
        route = self._routes.get(topic)
        if route is None or route.gen != self._gen:
            route = self._resolve(topic)
        return bool(route.subs)

    def subscribers_of(self, topic: str) -> list[Subscription]:
        """Open subscriptions that would receive an event published on ``topic``."""
        validate_topic(topic)
        return self._index.match(topic)

    # -- publish -------------------------------------------------------------------------
    async def publish(self, topic: str, event: Event, *, timeout: float | None = None) -> int:
        """Deliver ``event`` to every matching subscription; return how many queued it.

        REALTIME (and BATCHED with room) are served first without waiting; then the publisher
        waits for room in the full BATCHED/BACKGROUND queues, in subscription order.

        Args:
            topic: a concrete topic (no wildcards).
            event: the :class:`Event` (shared by all subscribers: do not mutate it afterwards).
            timeout: seconds to wait for room in full queues; ``None`` waits as long as needed.

        Raises:
            TypeError / InvalidTopic: bad topic; TypeError: ``event`` is not an Event.
            BackpressureTimeout: a full queue stayed full longer than ``timeout``.
        """
        route = self._routes.get(topic)
        if route is None or route.gen != self._gen:
            route = self._resolve(topic)
        if not isinstance(event, Event):
            raise TypeError(f"publish() needs an Event, got {event.__class__.__name__}")
        if self.instruments.tracer is not None and not _TRACED.get() and topic not in self.instruments.untraced:
            return await self._publish_traced(topic, event, timeout)
        route.published += 1
        subs = route.subs
        if not subs:
            return 0
        item = _new_delivery(Delivery, (topic, event))
        delivered = 0
        blocked: list[Subscription] | None = None
        etype = event.type
        for sub in subs:
            if sub._types is not None and etype not in sub._types:
                continue
            r = sub._offer(item, route)
            if r > 0:
                delivered += 1
            elif r < 0:
                if blocked is None:
                    blocked = [sub]
                else:
                    blocked.append(sub)
        if blocked is not None:
            delivered += await self._deliver_blocked(blocked, item, route, delivered, timeout)
        route.delivered += delivered
        return delivered

    def publish_nowait(self, topic: str, event: Event) -> int:
        """Deliver without ever waiting: full BATCHED/BACKGROUND queues count a ``queue_full`` drop.

        For callers that must not block (e.g. a sync callback). Returns deliveries made.
        """
        route = self._routes.get(topic)
        if route is None or route.gen != self._gen:
            route = self._resolve(topic)
        if not isinstance(event, Event):
            raise TypeError(f"publish_nowait() needs an Event, got {event.__class__.__name__}")
        if self.instruments.tracer is not None and not _TRACED.get() and topic not in self.instruments.untraced:
            return self._publish_traced_nowait(topic, event)
        route.published += 1
        item = _new_delivery(Delivery, (topic, event))
        delivered = 0
        for sub in route.subs:
            if sub._types is not None and event.type not in sub._types:
                continue
            r = sub._offer(item, route)
            if r > 0:
                delivered += 1
            elif r < 0:
                sub._count_drop(DropReason.QUEUE_FULL, route)
        route.delivered += delivered
        return delivered

    def offer(self, topic: str, event: Event) -> int | None:
        """Deliver now if that needs no waiting: the deliveries; ``None`` (nothing delivered) when
        a BATCHED/BACKGROUND subscriber is full, for a caller that must never wait here and
        publishes the event later, in order (the bridge client's reader)."""
        route = self._routes.get(topic)
        if route is None or route.gen != self._gen:
            route = self._resolve(topic)
        etype = event.type
        for sub in route.subs:
            if (
                sub.qos is not QoS.REALTIME
                and len(sub._queue) >= sub._maxsize
                and sub._held is None
                and (sub._types is None or etype in sub._types)
            ):
                return None
        return self.publish_nowait(topic, event)

    async def _deliver_blocked(
        self, blocked: list[Subscription], item: Delivery, route: _Route, done: int, timeout: float | None
    ) -> int:
        delivered = 0
        if timeout is None:
            for sub in blocked:
                delivered += await sub._put_wait(item)
            return delivered
        current = blocked[0]
        try:
            async with asyncio.timeout(timeout):
                for current in blocked:
                    delivered += await current._put_wait(item)
        except TimeoutError:
            route.delivered += done + delivered
            raise BackpressureTimeout(route.topic, current.id, done + delivered, timeout) from None
        return delivered

    def _resolve(self, topic: str) -> _Route:
        route = self._routes.get(topic)
        if route is None:
            validate_topic(topic)
            route = _Route(topic)
            self._routes[topic] = route
            if len(self._routes) > self._max_topics:  # the oldest topic's counters go into the totals
                self._evicted.absorb(self._routes.pop(next(iter(self._routes))))
        route.subs = tuple(self._index.match(topic))
        route.gen = self._gen
        return route

    # -- stats ---------------------------------------------------------------------------
    def stats(self, topic: str | None = None) -> TopicStats | BusStats | None:
        """Counters: of one topic (``None`` if never published to), or of the whole bus."""
        if topic is not None:
            validate_topic(topic)
            route = self._routes.get(topic)
            return None if route is None else topic_snapshot(route, self._index.match(topic))
        return bus_snapshot(self._routes.values(), self._evicted, self._subs.values(), self._index.match)

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Close every subscription (readers drain what is queued, then stop), refuse new ones; idempotent."""
        self._closed = True
        self._uninstrument()
        for sub in list(self._subs.values()):
            self._close_subscription(sub, "bus_closed")
        tasks = [t for t in self._callback_tasks.values() if not t.done()]
        if tasks:
            # Callback consumers drain what is queued; give them a moment, then the owner cancels.
            await asyncio.wait(tasks, timeout=1.0)
        if self._owns_supervisor:
            await self._supervisor.aclose()

    def __repr__(self) -> str:
        return f"<EventBus {len(self._subs)} subscriptions, {len(self._routes)} topics{' closed' * self._closed}>"
