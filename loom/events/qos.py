"""QoS levels, overflow policies and drop reasons."""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["DEFAULT_MAXSIZE", "DropReason", "Overflow", "QoS"]


class QoS(IntEnum):
    """Delivery class of a subscription (values as ``loom.v1.QoSLevel``)."""

    REALTIME = 0
    """Bounded queue; the publisher never waits; overflow policy on full."""
    BATCHED = 1
    """Bounded queue; in order, no drops; the publisher awaits room (backpressure)."""
    BACKGROUND = 2
    """Large queue; no drops; may be consumed in batches."""


DEFAULT_MAXSIZE = {QoS.REALTIME: 512, QoS.BATCHED: 2048, QoS.BACKGROUND: 65536}


class Overflow(StrEnum):
    """What a full REALTIME subscription does with a new event."""

    DROP_NEWEST = "drop_newest"
    """Drop the incoming event (default)."""
    DROP_OLDEST = "drop_oldest"
    """Evict the oldest queued event to make room."""
    SAMPLE = "sample"
    """Above the high-water mark keep 1 in ``sample_every`` events; drop the newest when full."""
    COALESCE = "coalesce"
    """Keep only the latest event per key (default: event type): a newer event replaces the queued
    one with its key, in place; a new key that finds the queue full is dropped."""


class DropReason(StrEnum):
    """Why an event was not delivered to a subscription (keys of ``dropped`` counters)."""

    QUEUE_FULL = "queue_full"
    DROP_OLDEST = "drop_oldest"
    SAMPLED = "sampled"
    COALESCED = "coalesced"
    CONSUMER_GONE = "consumer_gone"
    AGENT_STOPPED = "agent_stopped"
    """Queued for an agent that stopped before handling it."""
    TOO_LARGE = "too_large"
    """Bigger than the message limit of the stream it had to cross (the bridge)."""
    DISCONNECTED = "disconnected"
    """For a bridged agent whose stream was down: beyond what is kept for its return, or all of
    it when it did not come back in time."""
    CLOSED = "closed"
    """Queued when its subscription was closed for good with nobody left to read it."""
