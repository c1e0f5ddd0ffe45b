"""Durable subscriptions in a cluster: a BACKGROUND (or ``durable=True``) subscription is fed by JetStream.

Once the runtime joined a cluster, each durable subscription of its bus (an agent's mailbox with
BACKGROUND QoS, ``Agent(durable=True)``, ``bus.subscribe(..., durable=True)``) receives the events of
its patterns that the link both exports and imports through a durable JetStream consumer instead of
from the bus: every event published on them, here or in another runtime, is stored in the stream
(:class:`~loom.cluster.durable.DurableExport` sends it with its id as ``Nats-Msg-Id``: a re-sent copy
is dropped by the server), handed to the subscription, and acked only when its reader says it is
done (``sub.done(event)``: the agent core does after the handler returns, a callback subscription
after the callback). A runtime that dies (or stops the subscription) leaves what it had not acked to
be delivered again, to it or to another runtime with the same subscription: the consumer is named
after the subscription (an agent's id and its patterns), so replicas of one agent share it and each
event is handled once across them, at least once in all. Redeliveries of events this runtime handled
already (an ack lost with its connection) are dropped by event id. A subscription new to the cluster
starts with the events published from then on (not the stream's history); one that comes back
(a restarted worker, a re-run cell) resumes where it stopped, with what was published meanwhile.

The agent's private reply topic and patterns the link does not both export and import stay on the
bus (at-most-once across the cluster, as core NATS is); so does a pattern added after the subscription
was adopted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

from loom.cluster.connection import run_now
from loom.cluster.durable import DurableConsumer
from loom.cluster.subjects import PatternSet, covered
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.cluster.link import ClusterLink
    from loom.events.event import Event
    from loom.events.subscription import Subscription

__all__ = ["DurableFeeds", "Feed"]

log = logging.getLogger("loom.cluster")


class Feed(DurableConsumer):
    """One durable subscription, fed by the durable consumer ``name`` over ``patterns``.

    At most ``window`` events are handed over and not yet done at a time (so none waits in the queue
    longer than the ack wait allows when handlers are slow: window × handling time < ``ack_wait``).
    """

    def __init__(self, link: ClusterLink, sub: Subscription, patterns: list[str], *, name: str, **options: Any) -> None:
        self.window = int(options.pop("window", 16))
        options.setdefault("max_ack_pending", self.window * 16)  # for the whole group of replicas
        super().__init__(link, patterns, name=name, batch=self.window, **options)
        self.sub = sub
        self.shared = True  # named after an agent: kept when this runtime leaves (replicas, restarts)
        self.inflight: dict[str, Any] = {}  # event id -> its message, handed over and not done yet
        self.fed = 0
        self.started = asyncio.Event()  # set once bound to its consumer (or failing to: ``error``)
        self.error = ""
        self._room_free = asyncio.Event()
        self._room_free.set()
        self._closing = False
        self.sending = False  # publishes here on its patterns go through the stream (once bound)

    claims = False  # other local subscribers on these patterns still take the plain import
    deliver_new = True  # a new subscriber starts now, not with the stream's history; an existing one resumes
    pull_s = 0.5  # closing waits for the last pull to end (a message sent to a pull nobody reads is stuck)

    async def start(self) -> None:
        self.sub.on_done = self._done
        await super().start()
        # Only now (the consumer exists) do publishes here go into the stream acked and the bus's
        # deliveries on these patterns stop: until then the subscription is served as before, and if
        # JetStream refuses it stays that way. An event published in between may come both ways
        # (at-least-once allows it); none is lost.
        sender = self.link.durable_sender(self.stream)
        if sender is None:
            raise LoomError("the cluster link is closing")
        sender.add(self.patterns)
        self.sub.divert(PatternSet.of(self.patterns).matches)
        self.sending = True

    async def _room(self) -> int:
        while not (self.sub.closed or self._closing) and len(self.inflight) >= self.window:
            self._room_free.clear()
            try:  # woken by a done event; a closed subscription (its queue discarded) is seen within 1 s
                await asyncio.wait_for(self._room_free.wait(), 1.0)
            except TimeoutError:
                pass
        return 0 if self.sub.closed or self._closing else self.window - len(self.inflight)

    async def _handle(self, msg: Any) -> None:
        event = self.link._decode(msg)
        if event is None:  # not a Loom event, or its hop budget spent: nothing to hand over
            self.not_loom += 1
            run_now(msg.ack(), _ignore)
            return
        eid = event.id
        if eid in self._seen:  # handled here before and its ack was lost
            self.duplicates += 1
            run_now(msg.ack(), _ignore)
            return
        if eid in self.inflight:  # delivered again while still queued here: ack the newest delivery later
            self.duplicates += 1
            self.inflight[eid] = msg
            return
        self.inflight[eid] = msg
        if await self.sub.feed(msg.subject, event):
            self.fed += 1
        else:  # the subscription closed meanwhile: someone else takes it
            self.inflight.pop(eid, None)
            run_now(msg.nak(), _ignore)

    def _done(self, event: Event) -> None:
        msg = self.inflight.pop(event.id, None)
        if msg is None:
            return  # not from the stream (the reply topic, a pattern added later)
        run_now(msg.ack(), _ignore)
        self._seen[event.id] = None
        if len(self._seen) > 100_000:
            self._seen.popitem(last=False)
        self.handled += 1
        self._room_free.set()

    async def aclose(self) -> None:
        # Let the pull in progress end rather than cancel it: a message given back (nak) while a pull
        # of this client is still open would go to that pull, which nobody reads any more, and wait
        # there for ack_wait. Then give back what was handed over and never done.
        self._closing = True
        self._room_free.set()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            await asyncio.wait([task], timeout=self.pull_s + 2.0)
        await super().aclose()
        if self.sub.on_done == self._done:
            self.sub.on_done = None
        for msg in self.inflight.values():  # handed over, never done: delivered again at once, elsewhere
            run_now(msg.nak(), _ignore)
        self.inflight.clear()
        if not self.shared and self.link.nc is not None and self.link.nc.is_connected:
            try:
                await asyncio.wait_for(self.link.nc.jetstream().delete_consumer(self.stream, self.name), 2.0)
            except Exception as exc:  # noqa: BLE001 - gone already, or the server is: it expires
                log.debug("durable feed %s: delete consumer: %s", self.name, exc)

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "fed": self.fed, "inflight": len(self.inflight)}


class DurableFeeds:
    """The link part that adopts the bus's durable subscriptions (see the module doc)."""

    def __init__(self, link: ClusterLink, **options: Any) -> None:
        self.link = link
        self.options = options  # ack_wait, max_deliver, window, stream
        self.feeds: dict[str, Feed] = {}  # subscription id -> its feed
        self.patterns = PatternSet()  # fed here: in the directory entry, so other runtimes send them acked
        self._starting: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.link.feeds = self
        bus = self.link.bus
        bus.on_durable = self.adopt
        for sub in bus.subscriptions():
            if sub.durable:
                self.adopt(sub)
        if self._starting:
            await asyncio.wait(self._starting, timeout=10.0)

    def adopt(self, sub: Subscription) -> None:
        """Feed ``sub`` from the stream (the bus calls this for each new durable subscription)."""
        link = self.link
        patterns = [
            p
            for p in sub.patterns
            if not _private(p) and covered(p, link.export_patterns) and covered(p, link.import_patterns)
        ]
        if not patterns or sub.id in self.feeds or sub.closed or link.closing:
            return
        feed = Feed(link, sub, patterns, name=_consumer_name(sub, patterns, link.node), **self.options)
        feed.shared = bool(sub.name)
        if not feed.shared:  # deleted when it closes; should this runtime die, the server removes it
            feed.inactive_threshold = 3600.0
        self.feeds[sub.id] = feed
        self.patterns.add(patterns)
        task = link.spawn(self._run(feed), name=f"loom.cluster.feed:{feed.name}")
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _run(self, feed: Feed) -> None:
        try:
            try:
                await feed.start()
            finally:
                feed.started.set()
            if feed._task is not None:
                await asyncio.wait([feed._task])  # ends when the subscription closes
        except Exception as exc:  # noqa: BLE001 - JetStream refused: the bus keeps serving it (at-most-once)
            log.warning("cluster link %s: cannot serve durable subscription %s: %s", self.link.node, feed.sub.id, exc)
            feed.error = self.link.conn.last_error = f"durable feed {feed.name}: {exc}"
        finally:
            if self.feeds.get(feed.sub.id) is feed:
                await self._drop(feed)

    async def _drop(self, feed: Feed) -> None:
        self.feeds.pop(feed.sub.id, None)
        self.patterns.remove(feed.patterns)
        if self.link.durable_export is not None and feed.sending:
            self.link.durable_export.remove(feed.patterns)
        await feed.aclose()

    async def aclose(self) -> None:
        if self.link.feeds is self:
            self.link.feeds = None
        if self.link.bus.on_durable == self.adopt:
            self.link.bus.on_durable = None
        for feed in list(self.feeds.values()):
            await self._drop(feed)
        for task in list(self._starting):
            task.cancel()

    def stats(self) -> dict[str, dict[str, int]]:
        return {f.name: f.stats() for f in self.feeds.values()}


def _private(pattern: str) -> bool:
    return pattern.startswith("agent.") and pattern.endswith(".replies")  # an agent's reply topic


def _consumer_name(sub: Subscription, patterns: list[str], node: str) -> str:
    """Replicas of one agent (same name, same patterns) share a consumer; an unnamed subscription
    gets one of its own."""
    digest = hashlib.sha1("\n".join(sorted(patterns)).encode()).hexdigest()[:8]  # noqa: S324 - a name
    label = sub.name.removeprefix("agent.") if sub.name else f"{node}-{sub.id}"
    return f"loom-{re.sub(r'[^A-Za-z0-9_-]', '_', label)}-{digest}"


def _ignore(exc: BaseException | None) -> None:
    """An ack or nak that failed (disconnected): the server delivers the message again after ``ack_wait``."""
