"""Replicas: the same agent in N runtimes, each event handled once across them.

A :class:`ReplicaGroup` subscribes the agent's topics with a NATS queue group (one member of the
group gets each message) and claims them on the link, so the runtime's plain import skips them:
an event on a replicated topic reaches exactly one runtime of the group, where it is published on
the local bus and the agent's mailbox takes it. A user scales a slow agent by starting more workers
(``loom worker --cluster URL module:agent``); a worker that dies takes only what it held with it
(core NATS: at-most-once; use :class:`~loom.cluster.durable.DurableConsumer` to lose nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from loom.cluster.codec import BATCH_HEADER
from loom.cluster.connection import settle
from loom.cluster.subjects import SUB_LIMITS, check_patterns, minimal_patterns

if TYPE_CHECKING:
    from loom.cluster.link import ClusterLink

__all__ = ["ReplicaGroup"]


class ReplicaGroup:
    """Queue-group subscriptions of ``patterns`` in group ``group`` (start with :meth:`ClusterLink.replicate`).

    Args:
        link: the runtime's cluster link.
        patterns: the topics of the replicated agent.
        group: the queue group (``loom.<agent id>`` by convention: replicas of one agent share it).
    """

    def __init__(self, link: ClusterLink, patterns: Iterable[str], group: str) -> None:
        if not group or any(c.isspace() for c in group):
            raise ValueError(f"a queue group is a non-empty name without spaces, got {group!r}")
        self.link = link
        self.patterns = minimal_patterns(check_patterns(patterns, "replicate"))
        self.group = group
        self.received = 0
        self._subs: list[Any] = []

    async def start(self) -> None:
        self.link.claim(self.patterns)
        self.link.groups[self.group] = self.patterns  # announced in the shared directory: senders never batch it
        self.link.grouped.add(self.patterns)
        for pattern in self.patterns:
            self._subs.append(
                await self.link.nc.subscribe(pattern, queue=self.group, cb=self._on_message, **SUB_LIMITS)
            )
        await settle(self.link.nc)  # a member receives its share as soon as start returns

    async def _on_message(self, msg: Any) -> None:
        headers = msg.headers
        if headers is not None and BATCH_HEADER in headers:  # from a sender that did not know of the group
            events = self.link._decode_batch(msg)
            self.received += len(events)
            await self.link.deliver_many(msg.subject, events)
            return
        event = self.link._decode(msg)
        if event is not None:
            self.received += 1
            await self.link.deliver(msg.subject, event)

    async def aclose(self) -> None:
        """Leave the group: the others take every event from now on."""
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await asyncio.wait_for(sub.unsubscribe(), 2.0)
            except Exception:  # noqa: BLE001, S110 - the connection is gone: nothing to leave
                pass
        self.link.unclaim(self.patterns)
        if self.link.groups.pop(self.group, None) is not None:
            self.link.grouped.remove(self.patterns)

    def __repr__(self) -> str:
        return f"<ReplicaGroup {self.group} {self.patterns} received={self.received}>"
