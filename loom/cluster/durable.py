"""Durable delivery on JetStream: at-least-once where core NATS is at-most-once.

:class:`DurableExport` (the sending side, ``join_cluster(durable=[...])``) makes sure a stream
holds the durable patterns and publishes matching events into it with ``Nats-Msg-Id`` = the
event id, pipelined (``publish_async``) and re-sent until the stream acks: the server drops a
re-sent copy within its duplicate window. :class:`DurableConsumer` (the receiving side,
``link.consume(...)``) pulls from a durable consumer shared by every runtime that names it (so N
workers share the work), runs the handler and acks only after it returns; a runtime that dies
leaves its unacked messages to be redelivered to the others after ``ack_wait``. Redeliveries of
messages it already handled (an ack lost with a connection) are suppressed by event id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loom.cluster.codec import encode
from loom.cluster.subjects import PatternSet, check_patterns, covered, minimal_patterns
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.cluster.link import ClusterLink
    from loom.events.event import Event

__all__ = ["DurableConsumer", "DurableExport", "ensure_stream"]

log = logging.getLogger("loom.cluster")

Handler = Callable[[str, "Event"], Awaitable[Any]]


async def ensure_stream(
    js: Any, name: str, subjects: list[str], replicas: int = 1, *, lock: asyncio.Lock, max_age: float = 0.0
) -> None:
    """Create stream ``name`` over ``subjects`` (keeping events ``max_age`` seconds at most; 0: no
    limit), or widen an existing one to cover them too. A change is a read-modify-write of the
    stream's config: ``lock`` serializes this runtime's, and the result is read back and widened
    again until it covers ``subjects`` (another runtime may have written its own meanwhile).

    Raises:
        LoomError: still not covered after 5 rounds.
    """
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    fresh = {"storage": StorageType.FILE, "num_replicas": replicas, "duplicate_window": 120.0, "max_age": max_age}
    async with lock:
        for _ in range(5):
            try:
                info = await js.stream_info(name)
            except NotFoundError:
                try:
                    await js.add_stream(StreamConfig(name=name, subjects=subjects, **fresh))
                    return
                except Exception:  # noqa: BLE001, S112 - another runtime created it meanwhile: widen it
                    continue
            have = list(info.config.subjects or [])
            if all(covered(p, have) for p in subjects):
                return
            info.config.subjects = minimal_patterns(have + subjects)
            try:
                await js.update_stream(info.config)
            except Exception as exc:  # noqa: BLE001 - a concurrent update: read it again
                log.debug("stream %s: update: %s", name, exc)
    raise LoomError(f"the JetStream stream {name!r} does not cover {subjects} after 5 tries")


@dataclass(slots=True)
class _Pending:
    topic: str
    data: bytes
    headers: dict[str, str]
    attempts: int
    deadline: float  # when to give up waiting for this attempt's ack / when to try again
    first: float = 0.0  # when it was first handed over


class DurableExport:
    """Exported events on ``patterns`` go through JetStream stream ``stream`` (at-least-once): those
    given, those durable subscriptions of this runtime are fed from (:meth:`add`) and those of the
    other runtimes (``theirs``, from the shared directory)."""

    def __init__(self, link: ClusterLink, patterns: Iterable[str], *, stream: str = "LOOM", replicas: int = 1) -> None:
        self.link = link
        self.patterns = minimal_patterns(check_patterns(patterns, "durable"))
        self.stream = stream
        self.replicas = replicas
        self.published = 0
        self.acked = 0
        self.retries = 0
        self.lost = 0
        self.last_seq = 0
        self.duplicate_acks = 0
        self.ack_timeout = 5.0
        self.retry_for = 110.0  # then counted lost: past the stream's 120 s duplicate window a re-send could duplicate
        self._own = PatternSet()
        self.theirs = PatternSet()
        self._pending: dict[int, _Pending] = {}
        self._retry: list[_Pending] = []
        self._js: Any = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.begin()
        if self.patterns:
            await ensure_stream(self._js, self.stream, self.patterns, self.replicas, **self.link.stream_options())

    def begin(self) -> None:
        """Become the link's durable sender (sync: see :meth:`ClusterLink.durable_sender`)."""
        self._js = self.link.nc.jetstream()
        self._own.add(self.patterns)
        self.link.durable_export = self
        self._sweeper = self.link.spawn(self._sweep(), name=f"loom.cluster.durable-export:{self.stream}")

    def covers(self, topic: str) -> bool:
        return self._own.matches(topic) or self.theirs.matches(topic)

    def add(self, patterns: list[str]) -> None:
        """Also send ``patterns`` through the stream, from now on (the stream is widened by whoever
        consumes them; until it covers them a send is retried)."""
        self._own.add(patterns)

    def remove(self, patterns: list[str]) -> None:
        self._own.remove(patterns)

    async def publish(self, topic: str, event: Event) -> None:
        """Hand ``event`` to the stream (returns once sent; the ack is awaited in the background)."""
        data, headers = encode(event, self.link.node)
        nc = self.link.nc
        if nc is not None and len(data) > nc.max_payload:  # the stream cannot take it: it stays here
            self.link.counts.too_large += 1
            self.link._warn(
                f"too_large:{topic}",
                f"event {event.id} on {topic!r} is {len(data)} bytes encoded, more "
                f"than the server's max_payload ({nc.max_payload}): it stays local",
            )
            if self.link.feeds is not None:
                await self.link.feeds.deliver_local(topic, event)
            return
        headers = dict(headers or {})
        headers["Nats-Msg-Id"] = event.id  # the server drops a re-sent copy: exactly one in the stream
        self.published += 1
        await self._send(_Pending(topic, data, headers, 0, 0.0, time.monotonic()))

    async def _send(self, item: _Pending) -> None:
        item.attempts += 1
        item.deadline = time.monotonic() + self.ack_timeout
        try:
            fut = await self._js.publish_async(item.topic, item.data, headers=item.headers, wait_stall=self.ack_timeout)
        except Exception:  # noqa: BLE001 - disconnected, stalled: retried by the sweeper
            self._later(item)
            return
        key = id(fut)
        self._pending[key] = item
        fut.add_done_callback(lambda f: self._done(key, f))

    def _done(self, key: int, fut: asyncio.Future[Any]) -> None:
        item = self._pending.pop(key, None)
        if item is None:
            return
        if fut.cancelled() or fut.exception() is not None:
            self._later(item)  # no stream leader (an election), no responders: again, after a pause
        else:
            ack = fut.result()
            self.acked += 1
            self.last_seq = max(self.last_seq, ack.seq or 0)
            if ack.duplicate:
                self.duplicate_acks += 1

    def _later(self, item: _Pending) -> None:
        item.deadline = time.monotonic() + min(0.05 * 2**item.attempts, 2.0)  # back off: 0.1 s … 2 s
        self._retry.append(item)

    async def _sweep(self) -> None:
        # Acks that never come (a node died with the request in flight) and refused sends are re-sent
        # with the same Nats-Msg-Id until the stream takes them; after retry_for, counted lost.
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            late = [k for k, it in self._pending.items() if it.deadline < now]
            for k in late:
                self._retry.append(self._pending.pop(k))
            due = [it for it in self._retry if it.deadline <= now]
            if not due:
                continue
            self._retry = [it for it in self._retry if it.deadline > now]
            for item in due:
                if now - item.first > self.retry_for:
                    self.lost += 1
                    log.warning("durable export gave up on an event on %r after %d attempts", item.topic, item.attempts)
                    continue
                self.retries += 1
                await self._send(item)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event published so far is acked by the stream (or counted lost): also
        those still queued for the export task."""
        deadline = time.monotonic() + timeout
        while self._busy() and time.monotonic() < deadline:  # noqa: ASYNC110 - acks land in callbacks
            await asyncio.sleep(0.02)
        return not self._busy()

    def _busy(self) -> bool:
        exporter = self.link.exporter
        queued = exporter.busy or (exporter.sub is not None and exporter.sub.qsize() > 0)
        return bool(self._pending or self._retry or queued)

    async def aclose(self) -> None:
        await self.flush(5.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.link.durable_export is self:
            self.link.durable_export = None

    def stats(self) -> dict[str, int]:
        return {
            "published": self.published,
            "acked": self.acked,
            "retries": self.retries,
            "lost": self.lost,
            "duplicate_acks": self.duplicate_acks,
            "last_seq": self.last_seq,
        }


class DurableConsumer:
    """A durable JetStream consumer ``name`` over ``patterns`` of stream ``stream``; every runtime that
    names the same consumer shares its messages (like a queue group, but acked).

    Args:
        replicas: copies of the consumer's state (default: as many as the stream has).
        handler: ``async fn(topic, event)``; the message is acked when it returns (or raises: a
            failing handler is counted, not retried forever). Default: publish on the local bus.
        ack_wait: seconds before an unacked message goes to another member.
        max_deliver: deliveries of one message at most.
        batch: messages pulled at a time.
        max_ack_pending: messages handed out and not acked yet, across every member, at most.
    """

    claims = True  # the plain import skips its patterns: the handler publishes them on the bus
    pull_s = 1.0  # how long one pull request waits for messages
    deliver_new = False  # a consumer made now starts with what the stream holds (True: with what comes next)
    inactive_threshold: float | None = None  # seconds unused before the server deletes it (None: never)

    def __init__(
        self,
        link: ClusterLink,
        patterns: Iterable[str],
        *,
        name: str,
        handler: Handler | None = None,
        stream: str = "LOOM",
        replicas: int | None = None,
        ack_wait: float = 30.0,
        max_deliver: int = 20,
        batch: int = 64,
        max_ack_pending: int | None = None,
    ) -> None:
        self.link = link
        self.patterns = minimal_patterns(check_patterns(patterns, "consume"))
        self.name = name
        self.handler = handler or link.deliver
        self.stream = stream
        self.replicas = replicas
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.batch = batch
        self.max_ack_pending = max_ack_pending or max(batch * 8, 256)
        self.handled = 0
        self.duplicates = 0
        self.failed = 0
        self.not_loom = 0
        self.rebinds = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._psub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        js = self.link.nc.jetstream()
        await ensure_stream(js, self.stream, self.patterns, self.replicas or 1, **self.link.stream_options())
        config = ConsumerConfig(
            durable_name=self.name,
            num_replicas=self.replicas,  # None: as many as the stream (a copy on one node dies with it)
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            filter_subjects=self.patterns,
            deliver_policy=DeliverPolicy.NEW if self.deliver_new else DeliverPolicy.ALL,
            inactive_threshold=self.inactive_threshold,
        )
        try:
            await js.add_consumer(self.stream, config)
        except Exception:  # noqa: BLE001 - it exists (another worker made it): bind to it as it is
            pass
        self._psub = await js.pull_subscribe_bind(durable=self.name, stream=self.stream)
        if self.claims:
            self.link.claim(self.patterns)
        self._task = self.link.spawn(self._run(), name=f"loom.cluster.consume:{self.name}")

    async def _run(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        idle = 0
        reconnects = self.link.conn.reconnects
        while True:
            room = await self._room()
            if not room:
                return
            if self.link.conn.reconnects != reconnects or idle >= 5:
                # A new connection, or five empty pulls in a row: if the consumer holds messages, pull
                # through a fresh subscription (one bound before a failover may never be served again).
                reconnects, idle = self.link.conn.reconnects, 0
                await self._rebind_if_stuck()
            try:
                msgs = await self._psub.fetch(room, timeout=self.pull_s)
            except (TimeoutError, NatsTimeout):
                idle += 1
                continue
            except Exception as exc:  # noqa: BLE001 - reconnecting, leader election: try again shortly
                log.debug("durable consumer %s fetch: %s", self.name, exc)
                idle += 1
                await asyncio.sleep(0.2)
                continue
            idle = 0
            for msg in msgs:
                await self._handle(msg)

    async def _room(self) -> int:
        """How many messages to pull next (0: stop)."""
        return self.batch

    async def _rebind_if_stuck(self) -> None:
        js = self.link.nc.jetstream()
        try:
            info = await js.consumer_info(self.stream, self.name)
            if not (info.num_pending or info.num_ack_pending):
                return
            old, self._psub = self._psub, await js.pull_subscribe_bind(durable=self.name, stream=self.stream)
            self.rebinds += 1
        except Exception as exc:  # noqa: BLE001 - JetStream not reachable yet: the next round tries again
            log.debug("durable consumer %s rebind: %s", self.name, exc)
            return
        try:
            await asyncio.wait_for(old.unsubscribe(), 2.0)
        except Exception:  # noqa: BLE001, S110 - the old subscription died with its connection
            pass

    async def _handle(self, msg: Any) -> None:
        event = self.link._decode(msg)
        if event is None:
            self.not_loom += 1
            await _ack(msg)
            return
        if event.id in self._seen:  # a redelivery of one this runtime handled (its ack was lost)
            self.duplicates += 1
            await _ack(msg)
            return
        try:
            await self.handler(msg.subject, event)
        except Exception as exc:  # noqa: BLE001 - contained like an agent's handler error; not retried forever
            self.failed += 1
            log.warning("durable consumer %s: handler failed on %r: %s", self.name, msg.subject, exc)
        self._seen[event.id] = None
        if len(self._seen) > 100_000:
            self._seen.popitem(last=False)
        self.handled += 1
        await _ack(msg)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=3.0)
        if self._psub is not None:
            try:
                await asyncio.wait_for(self._psub.unsubscribe(), 2.0)
            except Exception:  # noqa: BLE001, S110 - the connection is gone already
                pass
        if self.claims:
            self.link.unclaim(self.patterns)

    def stats(self) -> dict[str, int]:
        return {"handled": self.handled, "duplicates": self.duplicates, "failed": self.failed, "rebinds": self.rebinds}


async def _ack(msg: Any) -> None:
    try:
        await msg.ack()
    except Exception:  # noqa: BLE001, S110 - disconnected: the server redelivers, the id check drops it
        pass
