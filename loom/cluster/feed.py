"""Durable subscriptions in a cluster: an agent with BACKGROUND QoS is fed by JetStream.

Once the runtime joined a cluster, each durable subscription of its bus — an agent's mailbox with
BACKGROUND QoS or ``Agent(durable=True)``, a BACKGROUND callback subscription, any subscription made
with ``durable=True`` — receives the events of its patterns that the link both exports and imports
through a durable JetStream consumer instead of from the bus: every event published on them, here or
in another runtime, is stored in the stream (:class:`~loom.cluster.durable.DurableExport` sends it
with its id as ``Nats-Msg-Id``: a re-sent copy is dropped by the server), handed to the subscription,
and acked only when its reader says it is done (``sub.done(event)``: the agent core does after the
handler returns, a callback subscription after the callback; a plain reader of a ``durable=True``
subscription must, or it gets no more than ``window`` events). A runtime that dies (or stops the
subscription) leaves what it had not acked to be delivered again. An agent's consumer is named after
the agent (its id and patterns), so replicas of one agent share it and each event is handled once
across them, at least once in all; a returning agent (a restarted worker, a re-run cell) resumes
with what was published while it was away. Any other subscription has a consumer of its own,
starting with what is published from its start on. Redeliveries of events a runtime already handled
(an ack lost with its connection) are dropped by event id; a handler still running after half of
``ack_wait`` keeps its events (``in_progress``) rather than have them go to a replica.

What stays on the bus (at-most-once across the cluster, as core NATS is): patterns that may match an
agent's reply topic (a correlated reply is the request's business), patterns the link does not both
export and import, patterns added after the subscription was adopted (one removed stops being fed),
everything if the server has no JetStream (a warning says so), an event too big for the server
(delivered here only, counted ``too_large``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from loom.cluster.codec import BATCH_HEADER, ORIGIN_KEY
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


class _Message:
    """A stream message handed over as ``left`` events (one, or a batch): acked once all are done."""

    __slots__ = ("left", "msg")

    def __init__(self, msg: Any, left: int) -> None:
        self.msg = msg
        self.left = left


class Feed(DurableConsumer):
    """One durable subscription, fed by the durable consumer ``name`` over ``patterns``.

    At most ``window`` events are handed over and not yet done at a time (so none waits in the queue
    longer than the ack wait allows when handlers are slow: window × handling time < ``ack_wait``).
    """

    claims = False  # other local subscribers on these patterns still take the plain import
    deliver_new = True  # a new consumer starts with what comes next, not the stream's history
    pull_s = 0.5  # closing waits for the last pull to end (a message sent to a pull nobody reads is stuck)

    def __init__(self, link: ClusterLink, sub: Subscription, patterns: list[str], *, name: str, **options: Any) -> None:
        self.window = int(options.pop("window", 16))
        options.setdefault("max_ack_pending", self.window * 16)  # for the whole group of replicas
        super().__init__(link, patterns, name=name, batch=self.window, **options)
        self.sub = sub
        self.shared = sub.name.startswith("agent.")  # an agent's: kept when it leaves (replicas, restarts)
        if not self.shared:  # deleted when it closes; should its runtime die, the server removes it
            self.inactive_threshold = 3600.0
        self.inflight: dict[str, _Message] = {}  # event id -> its message, handed over and not done yet
        self.fed = 0
        self.skipped = 0  # not for this subscription (another type, a pattern it no longer has)
        self.started = asyncio.Event()  # set once bound to its consumer (or failing to: ``error``)
        self.error = ""
        self.sending = False  # publishes here on its patterns go through the stream (once bound)
        self._direct = sub.intercept  # the subscription's own (an agent's pending replies), before divert
        self._undo: Any = None
        self._room_free = asyncio.Event()
        self._room_free.set()
        self._closing = False
        self._progress_at = time.monotonic()

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
        self.sending = True
        self._undo = self.sub.divert(PatternSet.of(self.patterns).matches)

    async def _room(self) -> int:
        while True:
            if self.sub.closed or self._closing:
                return 0
            self._keep_alive()
            if len(self.inflight) < self.window:
                return self.window - len(self.inflight)
            self._room_free.clear()
            try:  # woken by a done event; a closed subscription (its queue discarded) is seen within 1 s
                await asyncio.wait_for(self._room_free.wait(), 1.0)
            except TimeoutError:
                pass

    def _keep_alive(self) -> None:
        # A handler may run longer than ack_wait (an LLM call): tell the server its events are in
        # progress, so they do not go to a replica meanwhile.
        now = time.monotonic()
        if now - self._progress_at < self.ack_wait / 2:
            return
        self._progress_at = now
        for m in {id(m): m for m in self.inflight.values()}.values():
            run_now(m.msg.in_progress(), _ignore)

    async def _handle(self, msg: Any) -> None:
        link, subject = self.link, msg.subject
        if msg.headers is not None and BATCH_HEADER in msg.headers:  # from a sender that did not know
            events = link._decode_batch(msg)
        else:
            event = link._decode(msg)
            events = [] if event is None else [event]
        wanted = [e for e in events if self._wanted(subject, e)]
        if not wanted:
            run_now(msg.ack(), _ignore)
            return
        held = _Message(msg, len(wanted))
        for event in wanted:
            await self._hand_over(subject, event, held)

    def _wanted(self, subject: str, event: Event) -> bool:
        md = event.metadata
        if md.get(ORIGIN_KEY) == self.link.node:
            del md[ORIGIN_KEY]  # published here: as a local event (a handler may forward it to the cluster)
        if event.id in self._seen:  # handled here before and its ack was lost
            self.duplicates += 1
            return False
        sub = self.sub
        if (sub.types is not None and event.type not in sub.types) or not covered(subject, sub.patterns):
            self.skipped += 1
            return False
        return True

    async def _hand_over(self, subject: str, event: Event, held: _Message) -> None:
        eid = event.id
        if eid in self.inflight:  # delivered again while still queued here: done acks the newer delivery
            self.duplicates += 1
            self.inflight[eid] = held
            return
        self.inflight[eid] = held
        queued = await self.sub.feed(subject, event, self._direct)
        if queued > 0:
            self.fed += 1
        elif queued < 0:  # a reply a request of this agent waits for took it: handled
            self._done(event)
        elif self.inflight.pop(eid, None) is held and held.msg is not None:  # closed meanwhile: give it back
            run_now(held.msg.nak(), _ignore)
            held.msg = None

    def _done(self, event: Event) -> None:
        held = self.inflight.pop(event.id, None)
        if held is None:
            return  # not from the stream (a pattern that stayed on the bus)
        self._seen[event.id] = None
        if len(self._seen) > 100_000:
            self._seen.popitem(last=False)
        self.handled += 1
        held.left -= 1
        if held.left <= 0 and held.msg is not None:
            run_now(held.msg.ack(), _ignore)
        self._room_free.set()

    async def aclose(self) -> None:
        # Let the pull in progress end rather than cancel it: a message given back (nak) while a pull
        # of this client is still open would go to that pull, which nobody reads any more, and wait
        # there for ack_wait. Then give back what was handed over and never done; the subscription
        # is served by the bus again (after leave_cluster it goes on, at-most-once).
        self._closing = True
        self._room_free.set()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            await asyncio.wait([task], timeout=self.pull_s + 2.0)
        await super().aclose()
        if self._undo is not None:
            self._undo()
        if self.sub.on_done == self._done:
            self.sub.on_done = None
        for held in {id(h): h for h in self.inflight.values()}.values():
            if held.msg is not None:
                run_now(held.msg.nak(), _ignore)
        self.inflight.clear()
        if not self.shared and self.link.nc is not None and self.link.nc.is_connected:
            try:
                await asyncio.wait_for(self.link.nc.jetstream().delete_consumer(self.stream, self.name), 2.0)
            except Exception as exc:  # noqa: BLE001 - gone already, or the server is: it expires
                log.debug("durable feed %s: delete consumer: %s", self.name, exc)

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "fed": self.fed, "skipped": self.skipped, "inflight": len(self.inflight)}


class DurableFeeds:
    """The link part that adopts the bus's durable subscriptions (see the module doc)."""

    def __init__(self, link: ClusterLink, **options: Any) -> None:
        self.link = link
        self.options = options  # ack_wait, max_deliver, window, stream
        self.feeds: dict[str, Feed] = {}  # subscription id -> its feed
        self.patterns = PatternSet()  # fed here: in the directory entry, so other runtimes send them acked
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.link.feeds = self
        bus = self.link.bus
        bus.on_durable = self.adopt
        adopted = [f for f in map(self.adopt, [s for s in bus.subscriptions() if s.durable]) if f is not None]
        for feed in adopted:  # joined means served: each bound to its consumer (or refused)
            await asyncio.wait_for(feed.started.wait(), 30.0)

    def adopt(self, sub: Subscription) -> Feed | None:
        """Feed ``sub`` from the stream (the bus calls this for each new durable subscription)."""
        link = self.link
        patterns = [
            p
            for p in sub.patterns
            if not _may_be_a_reply(p) and covered(p, link.export_patterns) and covered(p, link.import_patterns)
        ]
        if not patterns or sub.id in self.feeds or sub.closed or link.closing:
            return None
        feed = Feed(link, sub, patterns, name=_consumer_name(sub, patterns, link.node), **self.options)
        self.feeds[sub.id] = feed
        self.patterns.add(patterns)
        task = link.spawn(self._run(feed), name=f"loom.cluster.feed:{feed.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return feed

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

    async def deliver_local(self, topic: str, event: Event) -> None:
        """An event that cannot go through the stream (too big): to the fed subscriptions here, as
        the bus would have delivered it (not acked: it was never in the stream)."""
        for feed in list(self.feeds.values()):
            if covered(topic, feed.patterns):
                await feed.sub.feed(topic, event, feed._direct)

    async def aclose(self) -> None:
        if self.link.feeds is self:
            self.link.feeds = None
        if self.link.bus.on_durable == self.adopt:
            self.link.bus.on_durable = None
        for feed in list(self.feeds.values()):
            await self._drop(feed)
        for task in list(self._tasks):
            task.cancel()

    def stats(self) -> dict[str, dict[str, int]]:
        return {f.name: f.stats() for f in self.feeds.values()}


def _may_be_a_reply(pattern: str) -> bool:
    """Whether ``pattern`` can match an agent's reply topic ``agent.<id>.replies``."""
    tokens = pattern.split(".")
    for i, (tok, want) in enumerate(zip(tokens, ("agent", "*", "replies"), strict=False)):
        if tok == ">":
            return True
        if tok != "*" and want != "*" and tok != want:
            return False
        if i == 2:
            return len(tokens) == 3
    return False


def _consumer_name(sub: Subscription, patterns: list[str], node: str) -> str:
    """Replicas of one agent (same id, same patterns) share a consumer; any other subscription gets
    one of its own."""
    digest = hashlib.sha1("\n".join(sorted(patterns)).encode()).hexdigest()[:8]  # noqa: S324 - a name
    label = sub.name.removeprefix("agent.") if sub.name.startswith("agent.") else f"{node}-{sub.id}"
    return f"loom-{re.sub(r'[^A-Za-z0-9_-]', '_', label)}-{digest}"


def _ignore(exc: BaseException | None) -> None:
    """An ack or nak that failed (disconnected): the server delivers the message again after ``ack_wait``."""
