"""The Envelope: conversation and routing keys carried in ``Event.metadata``.

Keys and defaults follow upstream Loom's Rust core (bare keys: ``thread_id``, ``correlation_id``,
``sender``, ``reply_to``, ``ttl``, ``hop``, ``ts`` and the trace keys). loom-py 0.1.0a1 clients
write ``loom.``-prefixed keys instead; reading accepts both, bare keys winning.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace

from loom.events.event import Event

__all__ = [
    "DEFAULT_TTL",
    "Envelope",
    "agent_reply_topic",
    "hop_on",
    "thread_broadcast_topic",
    "thread_reply_topic",
]

DEFAULT_TTL = 16
"""Hops an event may still make when no ``ttl`` key is present."""


_TRACE_KEYS = ("trace_id", "span_id", "trace_flags")
# loom-py 0.1.0a1 writes `loom.thread_id`, `loom.correlation_id`, `loom.sender`, `loom.reply_to`;
# `loom.ttl_ms` is a time, not a hop count, so it is not mapped.


def thread_broadcast_topic(thread_id: str) -> str:
    """``thread.<id>.broadcast``: multicast to a thread's participants."""
    return f"thread.{thread_id}.broadcast"


def thread_reply_topic(thread_id: str) -> str:
    """``thread.<id>.reply``: replies to a thread's coordinator."""
    return f"thread.{thread_id}.reply"


def agent_reply_topic(agent_id: str) -> str:
    """``agent.<id>.replies``: an agent's private point-to-point inbox."""
    return f"agent.{agent_id}.replies"


@dataclass(slots=True)
class Envelope:
    """Thread, correlation, routing and trace keys of one event.

    ``ttl`` is the number of hops the event may still make; ``hop`` how many it made.
    """

    thread_id: str
    correlation_id: str
    sender: str = ""
    reply_to: str = ""
    ttl: int = DEFAULT_TTL
    hop: int = 0
    ts: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    trace_id: str = ""
    span_id: str = ""
    trace_flags: str = ""

    # -- construction --------------------------------------------------------------------
    @classmethod
    def new(cls, thread_id: str, sender: str = "", *, reply_to: str | None = None, ttl: int = DEFAULT_TTL) -> Envelope:
        """A fresh envelope: correlation = thread, reply_to = ``thread.<id>.reply`` unless given."""
        return cls(
            thread_id=thread_id,
            correlation_id=thread_id,
            sender=sender,
            reply_to=thread_reply_topic(thread_id) if reply_to is None else reply_to,
            ttl=ttl,
            hop=0,
            ts=time.time_ns() // 1_000_000,
        )

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], fallback_id: str) -> Envelope:
        """Read the envelope keys, applying upstream's defaults for missing or unparseable ones.

        Defaults: thread = ``fallback_id``, correlation = thread, reply_to = ``thread.<thread>.reply``,
        sender ``""``, ttl 16, hop 0, ts now.
        """
        g = metadata.get  # runs once per handled event: direct lookups, legacy keys only as fallback
        thread_id = g("thread_id") or g("loom.thread_id") or fallback_id
        ttl, hop, ts = g("ttl"), g("hop"), g("ts")
        try:
            ttl = DEFAULT_TTL if ttl is None else int(ttl)
        except ValueError:
            ttl = DEFAULT_TTL
        try:
            hop = 0 if hop is None else max(int(hop), 0)
        except ValueError:
            hop = 0
        try:
            ts = int(ts) if ts is not None else -1
        except ValueError:
            ts = -1
        return cls(  # positional: this runs once per handled event
            thread_id,
            g("correlation_id") or g("loom.correlation_id") or thread_id,
            g("sender") or g("loom.sender") or "",
            g("reply_to") or g("loom.reply_to") or f"thread.{thread_id}.reply",
            ttl,
            hop,
            ts if ts >= 0 else time.time_ns() // 1_000_000,
            g("trace_id") or "",
            g("span_id") or "",
            g("trace_flags") or "",
        )

    @classmethod
    def from_event(cls, event: Event) -> Envelope:
        """The envelope of ``event`` (its id is the fallback thread id)."""
        return cls.from_metadata(event.metadata, event.id)

    # -- writing -------------------------------------------------------------------------
    def apply_to(self, metadata: MutableMapping[str, str], *, upstream: bool = False) -> None:
        """Write the 7 base keys (overwriting) and the trace keys that are set; with ``upstream``
        also the ``loom.``-prefixed keys loom-py 0.1.0a1 reads (its sender is the bare agent id)."""
        metadata["thread_id"] = self.thread_id
        metadata["correlation_id"] = self.correlation_id
        metadata["sender"] = self.sender
        metadata["reply_to"] = self.reply_to
        metadata["ttl"] = str(self.ttl)
        metadata["hop"] = str(self.hop)
        metadata["ts"] = str(self.ts)
        for key in _TRACE_KEYS:
            value = getattr(self, key)
            if value:
                metadata[key] = value
        if upstream:
            metadata["loom.thread_id"] = self.thread_id
            metadata["loom.correlation_id"] = self.correlation_id
            metadata["loom.reply_to"] = self.reply_to
            metadata["loom.sender"] = self.sender.removeprefix("agent.")

    def to_metadata(self) -> dict[str, str]:
        """The envelope as a fresh metadata dict."""
        md: dict[str, str] = {}
        self.apply_to(md)
        return md

    def attach(self, event: Event) -> Event:
        """A copy of ``event`` carrying this envelope (events are shared; never mutated in place)."""
        md = dict(event.metadata)
        self.apply_to(md)
        return event.replace(metadata=md)

    # -- routing -------------------------------------------------------------------------
    def next_hop(self) -> bool:
        """Count one hop: ``hop += 1``, ``ttl -= 1`` (not below 0). Returns whether it is alive (ttl > 0)."""
        self.hop += 1
        if self.ttl > 0:
            self.ttl -= 1
        return self.ttl > 0

    def copy(self, **changes: object) -> Envelope:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def broadcast_topic(self) -> str:
        """``thread.<thread_id>.broadcast``."""
        return thread_broadcast_topic(self.thread_id)

    @property
    def reply_topic(self) -> str:
        """``thread.<thread_id>.reply``."""
        return thread_reply_topic(self.thread_id)

    @property
    def agent_reply_topic(self) -> str:
        """``agent.<id>.replies`` of the sender when it is ``agent.<id>``, else ``""``."""
        if self.sender.startswith("agent.") and len(self.sender) > 6:
            return agent_reply_topic(self.sender[6:])
        return ""


def hop_on(event: Event) -> Event | None:
    """``event`` as its handler sees it: one hop counted (``ttl``/``hop`` rewritten in a copy of the
    metadata, the parsed envelope kept on the copy), or None when its hop budget is spent."""
    env = Envelope.from_metadata(event.metadata, event.id)
    if not env.next_hop():
        return None
    md = dict(event.metadata)  # only the hop budget changes; other keys default the same way when read
    md["ttl"] = str(env.ttl)
    md["hop"] = str(env.hop)
    handled = event._with_metadata(md)
    handled._env = env
    return handled
