"""Where replies arrive while a primitive waits for them.

A :class:`ReplyCollector` accepts deliveries whose ``correlation_id`` it expects. It is fed by
one of two inboxes: inside an agent, the agent's own mailbox intercepts correlated replies
(reply_to = ``agent.<id>.replies``: no extra subscription, and the reply does not wait behind
the handler that awaits it); elsewhere, a temporary subscription on ``thread.<id>.reply``,
closed when the primitive ends (also on timeout and cancellation). A collector can also fail:
its request went nowhere (:class:`~loom.errors.NoSubscribers`), or the agent waiting on it
stopped; its waiter then raises at once instead of waiting out the timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from loom.events.envelope import thread_reply_topic
from loom.events.event import Event
from loom.events.qos import QoS
from loom.events.queue import Delivery

if TYPE_CHECKING:
    from loom.agents.link import Link

__all__ = ["Inbox", "PendingInbox", "ReplyCollector", "TopicInbox"]


class ReplyCollector:
    """Gathers replies for a set of correlation ids until ``done(collector)``, its deadline
    (:meth:`expire`, told by the supervisor that watches it), or a failure (:meth:`fail`)."""

    __slots__ = (
        "_complete",
        "_done",
        "_error",
        "_expired",
        "_fut",
        "_types",
        "_unrouted",
        "events",
        "labels",
        "per_cid",
        "targets",
    )

    def __init__(
        self,
        targets: dict[str, str],
        types: Iterable[str],
        done: Callable[[ReplyCollector], bool],
    ) -> None:
        self.targets = targets  # correlation id -> label (e.g. the topic a request went to)
        self._types = types if isinstance(types, frozenset) else frozenset(types)
        self._done = done
        self.events: list[Event] = []
        self.labels: list[str] = []
        self.per_cid: dict[str, int] = {}
        self._fut: asyncio.Future[None] | None = None
        self._complete = False
        self._expired = False
        self._error: BaseException | None = None
        self._unrouted: set[str] = set()

    def offer(self, item: Delivery) -> bool:
        event = item.event
        md = event.metadata
        cid = md.get("correlation_id") or md.get("loom.correlation_id")
        if cid not in self.targets or event.type not in self._types:
            return False
        if self._complete:  # enough already: later replies of this exchange are consumed, not kept
            return True
        self.events.append(event)
        self.labels.append(self.targets[cid])
        self.per_cid[cid] = self.per_cid.get(cid, 0) + 1
        if self._done(self):
            self._complete = True
            fut = self._fut
            if fut is not None and not fut.done():
                fut.set_result(None)
        return True

    @property
    def answered(self) -> int:
        return len(self.per_cid)

    @property
    def unrouted(self) -> frozenset[str]:
        """Correlation ids whose request reached no subscriber."""
        return frozenset(self._unrouted)

    def fail(self, error: BaseException) -> None:
        """End the wait with ``error`` (raised by :meth:`wait`)."""
        if self._error is None and not self._complete:
            self._error = error
            self._wake()

    def expire(self) -> None:
        """The deadline passed: end the wait with what arrived."""
        self._expired = True
        self._wake()

    def _wake(self) -> None:
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    def no_route(self, cid: str, error: BaseException) -> None:
        """The request with ``cid`` reached no subscriber; when none of them did, fail with ``error``."""
        if cid in self.targets:
            self._unrouted.add(cid)
            if len(self._unrouted) == len(self.targets):
                self.fail(error)

    async def wait(self) -> bool:
        """Wait until done (True) or expired (False): watch it with a timeout first
        (``supervisor.watch(collector, timeout)``), or it waits until done or failed.

        Raises:
            NoSubscribers / ClosedError / RuntimeStopped: the collector failed (see :meth:`fail`).
        """
        if self._error is None and not self._expired and not self._done(self):
            fut = self._fut = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                self._fut = None
        if self._error is not None:
            raise self._error
        return self._done(self)


class Inbox:
    """Routes correlated replies to collectors; ``reply_to`` is where repliers should publish.
    A primitive adds its collectors and discards each when it ends (also on timeout and
    cancellation)."""

    reply_to: str

    def add(self, collector: ReplyCollector) -> None:
        raise NotImplementedError

    def discard(self, collector: ReplyCollector) -> None:
        raise NotImplementedError


class PendingInbox(Inbox):
    """Replies are taken off a stream the participant already reads (an agent's mailbox, in this
    process or behind the bridge) by looking their correlation id up in its ``pending`` map.
    Each agent core has one (``agent.inbox``); ``forget`` lets it count late replies."""

    __slots__ = ("_forget", "_pending", "reply_to")

    def __init__(
        self, pending: dict[str, ReplyCollector], reply_to: str, forget: Callable[[str], None] | None = None
    ) -> None:
        self._pending = pending
        self._forget = forget or (lambda cid: pending.pop(cid, None))
        self.reply_to = reply_to

    def add(self, collector: ReplyCollector) -> None:
        for cid in collector.targets:
            self._pending[cid] = collector

    def discard(self, collector: ReplyCollector) -> None:
        for cid in collector.targets:
            self._forget(cid)


class TopicInbox(Inbox):
    """A temporary subscription on ``thread.<id>.reply`` whose intercept feeds the collectors;
    closed when its last collector is discarded."""

    def __init__(self, link: Link, thread_id: str) -> None:
        self.reply_to = thread_reply_topic(thread_id)
        self._collectors: list[ReplyCollector] = []
        # Replies are consumed by the intercept; anything else (summaries, strays) is dropped.
        self._sub = link.subscribe(self.reply_to, qos=QoS.REALTIME, maxsize=1, intercept=self._route, name="collab")

    def _route(self, item: Delivery) -> bool:
        return any(c.offer(item) for c in self._collectors)

    def add(self, collector: ReplyCollector) -> None:
        self._collectors.append(collector)

    def discard(self, collector: ReplyCollector) -> None:
        if collector in self._collectors:
            self._collectors.remove(collector)
        if not self._collectors:
            self._sub.close()
