"""ClusterLink: the runtime's bus ⇄ NATS, the part that lets many runtimes share one bus.

Export (:mod:`loom.cluster.export`): local events on the exported patterns go to NATS, each on
its topic as the subject. Import: one NATS subscription per imported pattern whose callback
decodes and publishes on the local bus. Topics already follow NATS subject rules, so the mapping
is the identity.

No echo, no loop: the connection is ``no_echo`` (the server never returns a runtime its own
messages), an imported event keeps ``loom.origin`` (the node it was first published in) and the
export task skips every event carrying it, so an event crosses the cluster once. The envelope's
``hop``/``ttl`` travel in the envelope header and keep counting in every runtime that handles the event; an
event arriving with its budget spent is dropped (``expired``).

Subjects a queue group or a durable consumer serves in this runtime (:mod:`replicas`,
:mod:`durable`) are "claimed": the plain import skips them so each event is handled once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from loom.cluster.codec import (
    BATCH_HEADER,
    ORIGIN_KEY,
    NotALoomEvent,
    decode,
    decode_batch,
)
from loom.cluster.connection import ConnectionStats, connect, redact, server_list, settle
from loom.cluster.export import Exporter, MessageTooLarge
from loom.cluster.subjects import INTERNAL_PREFIXES, SUB_LIMITS, PatternSet, check_patterns, minimal_patterns
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.events.bus import EventBus
    from loom.events.event import Event
    from loom.telemetry.seam import Instruments

__all__ = ["ClusterLink", "LinkStats", "MessageTooLarge"]

log = logging.getLogger("loom.cluster")

Spawn = Callable[..., "asyncio.Task[Any]"]


@dataclass(slots=True)
class LinkStats:
    """Counters of one link (``link.stats()`` adds the connection's)."""

    exported: int = 0
    imported: int = 0
    echo_skipped: int = 0
    not_loom: int = 0
    bad_topic: int = 0
    too_large: int = 0
    expired: int = 0
    buffer_full: int = 0
    send_failed: int = 0
    batches: int = 0


class ClusterLink:
    """Joins one runtime's bus to a NATS server or cluster. Adopted by :meth:`loom.Loom.join_cluster`.

    Args:
        servers: ``nats://host:port`` URL(s): a list or a comma-separated string (failover order).
        bus: the runtime's :class:`EventBus`.
        instruments: where spans and metrics go (``loom.cluster.messages``).
        spawn: starts a task the runtime owns.
        export: patterns whose local events go to NATS.
        import_: patterns whose NATS messages are published on the local bus.
        node: this runtime's id in the cluster (default ``<host>-<random>``).
        envelope_headers: envelope keys as NATS headers (default; visible to NATS tools) or in the body
            (less client work per message: see :func:`loom.cluster.codec.encode`).
        options: passed to ``nats.connect`` (credentials, TLS, ``pending_size``, ...).
    """

    name = "cluster"

    def __init__(
        self,
        servers: str | list[str],
        *,
        bus: EventBus,
        instruments: Instruments,
        spawn: Spawn,
        export: Iterable[str] = (">",),
        import_: Iterable[str] = (">",),
        node: str | None = None,
        envelope_headers: bool = True,
        **options: Any,
    ) -> None:
        self.servers = server_list(servers)
        self.bus = bus
        self.instruments = instruments
        self.spawn = spawn
        self.export_patterns = minimal_patterns(check_patterns(export, "export"))
        self.import_patterns = minimal_patterns(check_patterns(import_, "import_"))
        self.node = node or f"{socket.gethostname().split('.')[0]}-{uuid.uuid4().hex[:8]}"
        self.options = options
        self.envelope_headers = envelope_headers
        self.nc: Any = None
        self.conn = ConnectionStats()
        self.counts = LinkStats()
        self._subs: list[Any] = []
        self._claimed = PatternSet()
        self.groups: dict[str, list[str]] = {}  # queue group -> its patterns, of the replicas in this runtime
        self.grouped = PatternSet()  # what queue groups anywhere in the cluster serve: never batched
        self._parts: list[Any] = []  # replicas, durable consumers, the directory: closed before the connection
        self.planned: list[Any] = []  # parts to start once connected (build_link puts them here)
        self.durable_export: Any = None  # the DurableExport, when some exported patterns are durable
        self.closing = False
        self.stream_max_age = 7 * 86400.0  # how long the JetStream stream keeps events (0: no limit)
        self._stream_lock = asyncio.Lock()
        self.feeds: Any = None  # the DurableFeeds: durable subscriptions of this runtime, fed by JetStream
        self.exporter = Exporter(self, max_pending=int(options.get("pending_size", 2 * 1024 * 1024)))
        self._warned: set[str] = set()
        instruments.observe("loom.cluster.messages", self._observe)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, subscribe the imports, start exporting.

        Raises:
            ClusterUnavailable: no server answered (the message names the URL and how to start one).
        """
        if self.nc is not None:
            return
        with self.instruments.span("cluster.connect", {"loom.cluster.servers": ",".join(map(redact, self.servers))}):
            self.nc = await connect(self.servers, name=f"loom:{self.node}", stats=self.conn, **self.options)
        for pattern in self.import_patterns:
            self._subs.append(await self.nc.subscribe(pattern, cb=self._on_message, **SUB_LIMITS))
        await settle(self.nc)  # the server holds the subscriptions before start returns: joined means receiving
        if self.export_patterns:
            self.exporter.start()
        for part in self.planned:
            await self.add_part(part)

    async def aclose(self) -> None:
        """Stop importing and exporting, close the parts, drain (what was published is flushed) and close."""
        self.closing = True
        await self.exporter.aclose()
        for part in reversed(self._parts):
            await part.aclose()
        self._parts.clear()
        nc, self.nc = self.nc, None
        if nc is not None:
            try:
                await asyncio.wait_for(nc.drain(), 5.0)
            except Exception:  # noqa: BLE001 - a dead connection cannot drain: close it anyway
                pass
            if not nc.is_closed:
                try:
                    await asyncio.wait_for(nc.close(), 5.0)
                except Exception:  # noqa: BLE001 - closing a dead connection: nothing more to release
                    log.debug("cluster link %s: close did not finish", self.node)
        self._subs.clear()
        self.instruments.forget("loom.cluster.messages", self._observe)

    async def add_part(self, part: Any) -> Any:
        """Start a part that rides this connection (replicas, durable consumers, the directory); closed
        before the connection."""
        await part.start()
        self._parts.append(part)
        return part

    # -- export --------------------------------------------------------------------------
    async def send(self, topic: str, event: Event) -> None:
        """Publish ``event`` to the cluster only (not on the local bus), now.

        Raises:
            MessageTooLarge: bigger than the server's ``max_payload``. LoomError: not connected.
        """
        if self.nc is None:
            raise LoomError("the cluster link is not connected")
        with self.instruments.span("cluster.send", {"loom.topic": topic, "loom.event.type": event.type}):
            durable = self.durable_export
            if durable is not None and durable.covers(topic):  # into the stream, acked, by event id
                await durable.publish(topic, event)
                return
            await self.exporter.send(self.nc.publish, topic, event, self.node)

    # -- replicas and durable consumers --------------------------------------------------
    async def replicate(self, patterns: Iterable[str], group: str) -> Any:
        """Receive ``patterns`` as one member of queue group ``group``: each event reaches one member.
        Returns the :class:`~loom.cluster.replicas.ReplicaGroup` (closed with the link)."""
        from loom.cluster.replicas import ReplicaGroup

        return await self.add_part(ReplicaGroup(self, patterns, group))

    async def consume(self, patterns: Iterable[str], *, name: str, **options: Any) -> Any:
        """Receive ``patterns`` through durable JetStream consumer ``name`` (at-least-once, acked after
        the handler returns). Returns the :class:`~loom.cluster.durable.DurableConsumer`."""
        from loom.cluster.durable import DurableConsumer

        return await self.add_part(DurableConsumer(self, patterns, name=name, **options))

    def stream_options(self) -> dict[str, Any]:
        """What :func:`~loom.cluster.durable.ensure_stream` needs from this link."""
        return {"lock": self._stream_lock, "max_age": self.stream_max_age}

    def durable_sender(self, stream: str = "LOOM") -> Any:
        """The :class:`~loom.cluster.durable.DurableExport`, made now if there is none yet (sync: the
        bus's durable-subscription hook and the directory ask for it); ``None`` once closing."""
        if self.durable_export is None and not self.closing:
            from loom.cluster.durable import DurableExport

            part = DurableExport(self, (), stream=stream)
            part.begin()
            self._parts.append(part)
        return self.durable_export

    async def remove_part(self, part: Any) -> None:
        """Close a part before the link closes (leave a queue group, stop a consumer)."""
        if part in self._parts:
            self._parts.remove(part)
        await part.aclose()

    # -- import --------------------------------------------------------------------------
    async def _on_message(self, msg: Any) -> None:
        subject = msg.subject
        if subject[0] in "$_" and subject.startswith(INTERNAL_PREFIXES):
            return  # JetStream, key-value, inboxes, capability calls: NATS traffic, not bus events
        if self._claimed.matches(subject):
            return  # a queue group or a durable consumer of this runtime delivers it
        reply = msg.reply
        if reply and reply.startswith("$JS.ACK."):
            return  # a JetStream consumer's delivery to its inbox (which ">" matches too): that consumer takes it
        headers = msg.headers
        if headers is not None and BATCH_HEADER in headers:
            await self.deliver_many(subject, self._decode_batch(msg))
            return
        event = self._decode(msg)
        if event is not None:
            await self.deliver(subject, event)

    def _decode_batch(self, msg: Any) -> list[Event]:
        try:
            return decode_batch(msg.data)
        except NotALoomEvent as exc:
            self.counts.not_loom += 1
            self._warn(f"not_loom:{msg.subject}", f"skipped a message on {msg.subject!r}: {exc}")
            return []

    def _decode(self, msg: Any) -> Event | None:
        try:
            event = decode(msg.data, msg.headers)
        except NotALoomEvent as exc:
            self.counts.not_loom += 1
            self._warn(f"not_loom:{msg.subject}", f"skipped a message on {msg.subject!r}: {exc}")
            return None
        ttl = event.metadata.get("ttl")
        if ttl is not None and ttl.lstrip("-").isdigit() and int(ttl) <= 0:
            self.counts.expired += 1  # its hop budget was spent before it crossed
            return None
        return event

    async def deliver(self, subject: str, event: Event) -> int:
        """Publish an imported event on the local bus (waits for room in full BATCHED queues)."""
        if ORIGIN_KEY not in event.metadata:  # a loom.v1 peer that is not a Loom runtime: mark it anyway
            event.metadata[ORIGIN_KEY] = "?"
        try:
            n = await self.bus.publish(subject, event)
        except (TypeError, ValueError) as exc:  # a NATS subject that is not a valid Loom topic
            self.counts.bad_topic += 1
            self._warn(f"bad_topic:{subject}", f"skipped a message on {subject!r}: {exc}")
            return 0
        self.counts.imported += 1
        return n

    async def deliver_many(self, subject: str, events: list[Event]) -> None:
        """:meth:`deliver` for the events of a batch (each carries ``loom.origin``: the sender set it)."""
        publish, done = self.bus.publish, 0
        try:
            for event in events:
                await publish(subject, event)
                done += 1
        except (TypeError, ValueError) as exc:  # the subject is not a valid Loom topic: the whole batch
            self.counts.bad_topic += len(events) - done
            self._warn(f"bad_topic:{subject}", f"skipped a message on {subject!r}: {exc}")
        self.counts.imported += done

    def claim(self, patterns: Iterable[str]) -> None:
        """Mark ``patterns`` as served by a queue group or durable consumer here: the plain import skips them."""
        self._claimed.add(patterns)

    def unclaim(self, patterns: Iterable[str]) -> None:
        self._claimed.remove(patterns)

    # -- observation ---------------------------------------------------------------------
    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned and len(self._warned) < 1000:  # once per kind and subject: no log flood
            self._warned.add(key)
            log.warning("cluster link %s: %s", self.node, message)
        self.conn.last_error = message

    def stats(self) -> dict[str, Any]:
        """Counters of messages and of the connection (disconnects, reconnects, slow-consumer drops)."""
        out = {**asdict(self.counts), **asdict(self.conn), "node": self.node, "connected": self.connected}
        if self.nc is not None:
            out["pending_bytes"] = self.nc.pending_data_size
        return out

    def nodes(self) -> dict[str, list[str]]:
        """The other runtimes of the cluster (node id → their agents), as the shared directory knows them."""
        shared = next((p for p in self._parts if hasattr(p, "nodes")), None)
        if shared is None:
            return {}
        return {n: [a["agent_id"] for a in d["entry"].get("agents", ())] for n, d in sorted(shared.nodes.items())}

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def _observe(self) -> list[tuple[float, dict[str, str]]]:
        return [(float(v), {"loom.cluster.count": k}) for k, v in asdict(self.counts).items() if v]

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<ClusterLink {self.node} {state} to {','.join(map(redact, self.servers))}>"
