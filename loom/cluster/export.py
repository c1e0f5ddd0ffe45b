"""Export: the runtime's events on exported patterns leave for NATS.

One bus subscription (BATCHED: a burst makes publishers wait, never drops) with two ways out. While
nothing is queued, the subscription's intercept hands each event to the client inside the publish
that made it (a request or a reply leaves with no task switch, written to the socket at once while
the connection is idle: the round trip's latency). Once a backlog builds, the export task takes it
whole and sends its plain events batched per subject, one ``loom.v1.EventStream`` message per run
(throughput: nats-py's per-message work dominates small events); conversation messages (envelope
keys) and durable ones always leave alone.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from loom.cluster.codec import ORIGIN_KEY, batchable, encode, encode_batch
from loom.cluster.connection import run_now, send_now
from loom.errors import LoomError
from loom.events.qos import QoS

if TYPE_CHECKING:
    from loom.cluster.link import ClusterLink
    from loom.events.event import Event
    from loom.events.subscription import Subscription

__all__ = ["Exporter", "MessageTooLarge"]

_BATCH_MAX = 64  # events per batch message at most: more gains little and coarsens queue-group sharing


class MessageTooLarge(LoomError, ValueError):
    """An event bigger than the server's ``max_payload``: it stays local (the link stays up)."""


class Exporter:
    """The export side of a :class:`~loom.cluster.link.ClusterLink`."""

    def __init__(self, link: ClusterLink, *, max_pending: int) -> None:
        self.link = link
        self.max_pending = max_pending  # the client's buffer: the eager path never makes it wait
        self.sub: Subscription | None = None
        self.task: asyncio.Task[None] | None = None
        self.busy = False

    def start(self) -> None:
        link = self.link
        self.sub = link.bus.subscribe(
            link.export_patterns, qos=QoS.BATCHED, maxsize=65_536, intercept=self._eager, name="cluster.export"
        )
        self.task = link.spawn(self._run(self.sub), name=f"loom.cluster.export:{link.node}")

    async def aclose(self) -> None:
        """Stop taking events; what is queued is sent first (5 s at most)."""
        if self.sub is not None:
            self.sub.close()  # the task sends what is queued, then ends
            self.sub = None
        if self.task is not None:
            await asyncio.wait([self.task], timeout=5.0)
            self.task.cancel()
            self.task = None

    async def _run(self, sub: Subscription) -> None:
        # One delivery at a time while traffic is light (each leaves at once: latency); a backlog is
        # taken whole and its plain events go out batched per subject (throughput: see codec). Order
        # is kept per subject, as NATS keeps it; across subjects a backlog may leave regrouped.
        node, counts = self.link.node, self.link.counts
        async for items in sub.batches(_BATCH_MAX):
            self.busy = True  # items taken and not sent yet: the publisher's eager path must queue behind
            try:
                await self._export_items(items, node, counts)
            finally:
                self.busy = False

    async def _export_items(self, items: list[Any], node: str, counts: Any) -> None:
        # A queue group shares messages, not events: its subjects get one event per message.
        grouped = self.link.grouped
        runs: dict[str, list[Event]] = {}  # per subject, in order: the order NATS keeps is per subject
        for topic, event in items:
            if ORIGIN_KEY in event.metadata:  # it came from the cluster: never send it back
                counts.echo_skipped += 1
            elif len(items) > 1 and batchable(event) and not grouped.matches(topic):
                runs.setdefault(topic, []).append(event)
            else:  # a conversation message leaves alone, after what its subject had before it
                await self._export_run(topic, runs.pop(topic, []), node)
                await self._export_one(topic, event, node)
        for topic, run in runs.items():
            await self._export_run(topic, run, node)

    def _eager(self, item: Any) -> bool:
        # Called by the publisher, before queueing: with nothing queued ahead (order) the event is
        # handed to the client right here, not one task switch later by the export task: a request
        # or a reply leaves within the publish that made it (the round trip's latency). A backlog
        # still queues, and leaves batched.
        event = item.event
        if ORIGIN_KEY in event.metadata:
            self.link.counts.echo_skipped += 1
            return True
        nc, out = self.link.nc, self.sub
        if out is None or out.qsize() or nc is None or not nc.is_connected or self.busy:
            return False
        if nc.pending_data_size or len(event.payload) + 4096 > self.max_pending:
            return False  # the flusher has not caught up: a burst, let it queue and leave batched
        topic = item.topic
        if self.link.durable_export is not None and self.link.durable_export.covers(topic):
            return False
        try:
            data, headers = encode(event, self.link.node, self.link.envelope_headers)
        except Exception:  # noqa: BLE001 - the export task reports it with its context
            return False
        if len(data) > nc.max_payload:
            return False
        # A conversation message (a request, a reply) is written to the socket right here when the
        # connection is idle, not by the client's flusher one loop turn later; plain events keep the
        # flusher, so a burst builds a backlog and leaves batched (see connection.send_now).
        try:
            sent = not batchable(event) and send_now(nc, topic, data, headers)
        except Exception:  # noqa: BLE001 - a bad subject: nats-py's publish raises it again, reported below
            sent = False
        if not sent:
            run_now(nc.publish(topic, data, headers=headers), self._eager_done)
        self.link.counts.exported += 1
        return True

    def _eager_done(self, exc: BaseException | None) -> None:
        if exc is not None:
            self.link.counts.send_failed += 1
            self.link._warn(f"eager:{type(exc).__name__}", f"a send failed: {exc!r}")

    async def _export_one(self, topic: str, event: Event, node: str) -> None:
        try:
            durable = self.link.durable_export
            if durable is not None and durable.covers(topic):
                await durable.publish(topic, event)
                return
            await self.send(self.link.nc.publish, topic, event, node)
        except MessageTooLarge as exc:
            self.link.counts.too_large += 1
            self.link._warn(f"too_large:{topic}", str(exc))
        except LoomError as exc:
            self.link._warn(f"send:{topic}", str(exc))

    async def _export_run(self, topic: str, run: list[Event], node: str) -> None:
        if not run:
            return
        if len(run) < 2 or (self.link.durable_export is not None and self.link.durable_export.covers(topic)):
            for event in run:  # durable events go one by one: each has its own id for deduplication
                await self._export_one(topic, event, node)
            return
        from nats.errors import ConnectionClosedError, MaxPayloadError, OutboundBufferLimitError

        data, headers = encode_batch(run, node)
        try:
            await self.link.nc.publish(topic, data, headers=headers)
        except MaxPayloadError:  # too big together: one by one (an event too big alone is reported there)
            for event in run:
                await self._export_one(topic, event, node)
            return
        except OutboundBufferLimitError:
            self.link.counts.buffer_full += len(run)
            return
        except ConnectionClosedError:
            self.link.counts.send_failed += len(run)
            return
        self.link.counts.exported += len(run)
        self.link.counts.batches += 1

    async def send(self, publish: Any, topic: str, event: Event, node: str) -> None:
        from nats.errors import ConnectionClosedError, MaxPayloadError, OutboundBufferLimitError

        data, headers = encode(event, node, self.link.envelope_headers)
        try:
            await publish(topic, data, headers=headers)
        except MaxPayloadError:
            raise MessageTooLarge(
                f"event {event.id} ({event.type}) on {topic!r} is {len(data)} bytes encoded, more than the "
                f"server's max_payload ({self.link.nc.max_payload}): it stays local; send large data by reference"
            ) from None
        except OutboundBufferLimitError:
            self.link.counts.buffer_full += 1  # disconnected and the reconnect buffer is full: lost, counted
            return
        except ConnectionClosedError:
            self.link.counts.send_failed += 1
            return
        self.link.counts.exported += 1
