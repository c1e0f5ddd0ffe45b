"""Counters and their frozen snapshots.

Counting is plain integer increments on the hot path; snapshots (sorting latency samples,
summing queue depths) are computed only when someone reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loom.events.qos import QoS

if TYPE_CHECKING:
    from loom.events.subscription import Subscription

__all__ = ["BusStats", "SubscriptionStats", "TopicStats", "bus_snapshot", "topic_snapshot"]


class _Route:
    """Cached routing and the counters of one concrete topic."""

    __slots__ = ("delivered", "dropped", "gen", "published", "subs", "topic")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.subs: tuple[Subscription, ...] = ()
        self.gen = -1
        self.published = 0
        self.delivered = 0
        self.dropped: dict[str, int] = {}

    def absorb(self, other: _Route) -> None:
        """Add another route's counters to this one (used to fold evicted topics into totals)."""
        self.published += other.published
        self.delivered += other.delivered
        for k, v in other.dropped.items():
            self.dropped[k] = self.dropped.get(k, 0) + v


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionStats:
    """A snapshot of one subscription's counters."""

    id: str
    patterns: tuple[str, ...]
    qos: QoS
    maxsize: int
    delivered: int
    dropped: dict[str, int]
    depth: int
    high_water: int
    latency_p50_us: float | None
    latency_p99_us: float | None
    latency_samples: int
    handler_errors: int
    closed: bool

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicStats:
    """A snapshot of one topic's counters (queue figures summed over its current subscribers)."""

    topic: str
    published: int
    delivered: int
    dropped: dict[str, int]
    subscriptions: int
    queue_depth: int
    high_water: int

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class BusStats:
    """A snapshot of the whole bus."""

    published: int
    delivered: int
    dropped: dict[str, int]
    subscriptions: int
    topics: dict[str, TopicStats] = field(default_factory=dict)
    subscription_stats: list[SubscriptionStats] = field(default_factory=list)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def topic_snapshot(route: _Route, subs: list[Subscription]) -> TopicStats:
    """One topic's counters, with queue figures summed over its current subscribers."""
    return TopicStats(
        topic=route.topic,
        published=route.published,
        delivered=route.delivered,
        dropped=dict(route.dropped),
        subscriptions=len(subs),
        queue_depth=sum(s.qsize() for s in subs),
        high_water=max((s._high_water for s in subs), default=0),
    )


def bus_snapshot(
    routes: Iterable[_Route],
    evicted: _Route,
    subs: Iterable[Subscription],
    match: Callable[[str], list[Subscription]],
) -> BusStats:
    """The whole bus: totals (including evicted topics), every topic and every subscription."""
    total = _Route("<total>")
    total.absorb(evicted)
    topics = {}
    for route in routes:
        total.absorb(route)
        topics[route.topic] = topic_snapshot(route, match(route.topic))
    subs = list(subs)
    return BusStats(
        published=total.published,
        delivered=total.delivered,
        dropped=total.dropped,
        subscriptions=len(subs),
        topics=topics,
        subscription_stats=[s.stats for s in subs],
    )
