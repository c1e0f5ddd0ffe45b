"""Session: one bridged agent's presence on the hub, across the streams it opens.

A session holds the agent's one bus subscription (all its patterns), the queue of messages for
it, and the action calls it has not answered; a stream (:class:`~loom.bridge.connection.Connection`)
is attached to it while the agent is connected. When a stream ends without the agent saying
goodbye (a network fault, a crash, a reset), the session is **parked**: its subscription keeps
events up to its bound (beyond it they are dropped and counted ``disconnected`` instead of
holding publishers), and the agent's next stream within ``resume_timeout`` takes them, in order.
If it does not come back, or leaves for good, or the server ends the stream for a fault, every
event still held is counted as dropped with the reason; nothing vanishes without a counter.
(What a broken connection had already taken from the writer cannot be known: delivery across a
broken stream is at most once.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from loom.bridge._pb.loom.v1 import bridge_pb2
from loom.bridge.observed import hop, traced_copy
from loom.bridge.outbox import Outbox
from loom.errors import InvalidTopic, LoomError, SubscriptionClosed
from loom.events.event import Event
from loom.events.qos import DropReason, QoS
from loom.events.topics import topic_matches, validate_pattern

if TYPE_CHECKING:
    from loom.bridge.connection import Connection
    from loom.bridge.server import BridgeServer
    from loom.events.queue import Delivery
    from loom.events.subscription import Subscription

__all__ = ["Session"]

log = logging.getLogger("loom.bridge")


class Session:
    """An agent on the hub. ``stream`` is its live stream, ``None`` while parked."""

    def __init__(self, server: BridgeServer, agent_id: str, *, qos: QoS, once: bool, batch: bool) -> None:
        self.server = server
        self.agent_id = agent_id
        self.qos = qos
        self.once = once  # one Delivery per event (topic = concrete topic) instead of one per pattern
        self.batch = batch  # the client takes DeliveryBatch messages
        self.outbound = Outbox(bridge_pb2.Delivery, server.stream_queue)
        self.sub: Subscription | None = None
        self.patterns: list[str] = []
        self.stream: Connection | None = None
        self.pending: dict[str, asyncio.Future[Any]] = {}  # action-call id -> the caller's future
        self.closed = False
        self.delivered = 0
        self.received = 0
        self._in_hand: list[Any] = []  # what the forwarder took from the subscription and has not queued
        self._forwarder: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._matches: dict[str, tuple[str, ...]] = {}  # concrete topic -> patterns (per-pattern mode)
        self._inst = server.instruments

    @property
    def holding(self) -> bool:
        """The forwarder holds messages it waits to queue: later events go behind them."""
        return bool(self._in_hand)

    # -- subscriptions -------------------------------------------------------------------
    def subscribe(self, pattern: str) -> None:
        """Forward events on ``pattern`` too.

        Raises:
            InvalidTopic: malformed pattern.
        """
        validate_pattern(pattern)
        if pattern in self.patterns or self.closed:
            return
        bus = self.server.bus
        if self.sub is None:
            self.sub = bus.subscribe(
                pattern,
                qos=self.qos,
                maxsize=self.server.stream_queue,
                intercept=self._direct,
                name=f"bridge-{self.agent_id}",
            )
            self._forwarder = self.server.spawn(self._forward(self.sub), name=f"loom.bridge.forward:{self.agent_id}")
        else:
            self.sub.add_pattern(pattern)
        self.patterns.append(pattern)
        self._matches.clear()

    def unsubscribe(self, pattern: str) -> None:
        if pattern in self.patterns and self.sub is not None:
            self.sub.remove_pattern(pattern)
            self.patterns.remove(pattern)
            self._matches.clear()

    def _messages(self, topic: str, event: Event) -> list[Any]:
        """The Delivery messages one event becomes for this agent (with telemetry on, the event
        carries a ``bridge.forward`` span's keys: the agent's local publish, then its handling,
        continue the trace under it)."""
        if self._inst.tracer is not None:
            event = traced_copy(self._inst, "bridge.forward", self.agent_id, topic, event)
        proto = event.to_proto()
        if self.once:
            return [bridge_pb2.Delivery(topic=topic, event=proto, concrete_topic=topic)]
        return [bridge_pb2.Delivery(topic=p, event=proto, concrete_topic=topic) for p in self._patterns_for(topic)]

    def _patterns_for(self, topic: str) -> tuple[str, ...]:
        """The agent's patterns ``topic`` matches (per-pattern mode: one Delivery each)."""
        patterns = self._matches.get(topic)
        if patterns is None:
            if len(self._matches) > 4096:
                self._matches.clear()
            patterns = self._matches[topic] = tuple(p for p in self.patterns if topic_matches(p, topic))
        return patterns

    def _direct(self, item: Delivery) -> bool:
        # The common case, synchronously in the publisher: a live stream, room in the queue and
        # nothing of this agent waiting ahead -> straight into the queue (no forwarder task hop).
        stream, outbound, sub = self.stream, self.outbound, self.sub
        if stream is None or self._in_hand or sub is None or sub.qsize() or outbound.full():
            return False  # the forwarder takes it, in order, with the stall and parking rules
        if not self.once and outbound.maxsize - outbound.qsize() < len(self._patterns_for(item.topic)):
            return False  # checked before the messages are made: the forwarder makes them once
        msgs = self._messages(item.topic, item.event)
        for msg in msgs:
            if not stream.write_direct(msg):
                outbound.put_nowait(msg)
        self.delivered += len(msgs)
        return True

    async def _forward(self, sub: Subscription) -> None:
        try:
            async for topic, event in sub:
                pending = self._in_hand = self._messages(topic, event)
                while pending:
                    if not await self._put(pending[0]):
                        self.close(DropReason.DISCONNECTED)  # it stalled and was cut: what is held is counted
                        return
                    pending.pop(0)
                    self.delivered += 1
        except SubscriptionClosed:
            return

    async def _put(self, msg: Any) -> bool:
        """Queue ``msg``, waiting for room: on a live stream at most ``stall_timeout`` (then the
        stream is cut for stalling: False), while parked as long as the session lives."""
        outbound = self.outbound
        if not outbound.full():
            outbound.put_nowait(msg)
            return True
        while True:
            stream = self.stream
            try:
                async with asyncio.timeout(self.server.stall_timeout if stream is not None else None):
                    await outbound.put(msg)
                return True
            except TimeoutError:
                if stream is self.stream:  # the same stream stayed full all along: it stalls
                    stall = self.server.stall_timeout
                    stream.close(f"client stalled: no room in its stream for {stall:g}s", "RESOURCE_EXHAUSTED")
                    return False

    # -- streams -------------------------------------------------------------------------
    def attach(self, stream: Connection) -> None:
        """``stream`` is now the agent's (a newer stream replaces a live one; a parked session resumes)."""
        old = self.stream
        if old is not None and old is not stream:
            old.close("replaced by a newer stream of the same agent")
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.stream = stream
        if self.sub is not None:
            self.sub.release()
        self.server.directory.update(self.agent_id, status="active")

    def detach(self, stream: Connection) -> None:
        """``stream`` ended. A fault the server found, a goodbye, or a server stop close the
        session; any other end parks it for ``resume_timeout`` seconds."""
        if stream is not self.stream:
            return  # a replaced stream: the session is another stream's now
        self.stream = None
        reason = stream.close_reason or "stream ended"
        for fut in list(self.pending.values()):
            if not fut.done():
                fut.set_exception(ConnectionError(f"agent {self.agent_id!r} disconnected ({reason})"))
                fut.exception()  # the caller may already be gone (timed out): do not warn
        self.pending.clear()
        self._keep_deliveries_only()
        self.server.directory.update(self.agent_id, status="disconnected")
        resume = self.server.resume_timeout
        if stream.close_code or stream.goodbye or self.closed or not resume:
            why = DropReason.AGENT_STOPPED if stream.goodbye else DropReason.DISCONNECTED
            self.close(why)
            return
        if self.sub is not None:
            self.sub.hold(DropReason.DISCONNECTED)
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(resume, self.close, DropReason.DISCONNECTED)
        log.info("agent %s disconnected (%s): its events are kept %gs for its return", self.agent_id, reason, resume)

    def _keep_deliveries_only(self) -> None:
        """What an ended stream left queued: events stay (for the next stream); answers to that
        stream (pongs, errors, action calls whose callers were just failed) go."""
        self.outbound.requeue([m for m in self.outbound.drain() if type(m) is bridge_pb2.Delivery])

    def close(self, reason: DropReason | str = DropReason.CLOSED) -> int:
        """End the session: every event still held is counted dropped with ``reason``; returns how many."""
        if self.closed:
            return 0
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.stream is not None:
            self.stream.close("the agent's session ended")
        dropped = 0
        sub = self.sub
        if sub is not None:
            dropped += sub.close(discard=reason)
            for msg in [*self.outbound.drain(), *self._in_hand]:
                if type(msg) is bridge_pb2.Delivery:
                    sub.count_drop(reason, msg.concrete_topic)
                    dropped += 1
            self._in_hand = []
        if self._forwarder is not None:
            self._forwarder.cancel()
        self.server._session_closed(self)
        if dropped:
            log.info("agent %s: %d undelivered events counted as %s", self.agent_id, dropped, reason)
        return dropped

    # -- inbound -------------------------------------------------------------------------
    async def handle(self, msg: Any, stream: Connection) -> None:
        """One ClientEvent from the agent's stream."""
        kind = msg.WhichOneof("msg")
        self.received += 1
        if kind == "publish":
            await self._publish(msg.publish, stream)
        elif kind == "publish_batch":
            for pub in msg.publish_batch.items:
                await self._publish(pub, stream)
        elif kind == "ping":
            stream.send(bridge_pb2.ServerEvent(pong=bridge_pb2.HeartbeatResponse(timestamp_ms=_now_ms(), status="ok")))
            self.server.directory.heartbeat(self.agent_id)
        elif kind == "action_result":
            fut = self.pending.pop(msg.action_result.id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.action_result)
        elif kind == "subscribe":
            try:
                self.subscribe(msg.subscribe.topic)
            except (InvalidTopic, TypeError) as exc:
                stream.send_error("INVALID_ARGUMENT", str(exc))
        elif kind == "unsubscribe":
            self.unsubscribe(msg.unsubscribe.topic)
        elif kind == "goodbye":
            stream.goodbye = True
        # further acks and empty messages are ignored, as upstream does

    async def _publish(self, pub: Any, stream: Connection) -> None:
        if not pub.HasField("event"):
            return
        bus = self.server.bus
        try:
            event = Event.from_proto(pub.event)
            if self._inst.tracer is None:
                delivered = await bus.publish(pub.topic, event, timeout=self.server.stall_timeout)
            else:  # continues the agent's bridge.send span; the hub's publish span is this one's child
                with hop(self._inst, "bridge.receive", self.agent_id, event.metadata, **_about(pub.topic, event)):
                    delivered = await bus.publish(pub.topic, event, timeout=self.server.stall_timeout)
        except (LoomError, ValueError, TypeError) as exc:
            stream.send_error("INVALID_ARGUMENT", f"publish to {pub.topic!r} refused: {exc}")
            return
        if not delivered and pub.expect_reply and not bus.has_subscribers(pub.topic):
            md = event.metadata
            cid = md.get("correlation_id") or md.get("loom.correlation_id") or ""
            stream.send_error(
                "NO_SUBSCRIBERS",
                f"nothing subscribes to {pub.topic!r}: no reply can come",
                {"topic": pub.topic, "correlation_id": cid},
            )

    def describe(self) -> dict[str, Any]:
        stream = self.stream
        return {
            "id": stream.id if stream else "",
            "agent": self.agent_id,
            "peer": stream.peer if stream else "",
            "state": "live" if stream else ("closed" if self.closed else "parked"),
            "topics": list(self.patterns),
            "delivered": self.delivered,
            "received": self.received,
            "dropped": dict(self.sub.stats.dropped) if self.sub is not None else {},
        }

    def __repr__(self) -> str:
        return f"<Session {self.agent_id} {self.describe()['state']} {len(self.patterns)} patterns>"


def _about(topic: str, event: Event) -> dict[str, str]:
    return {"loom.topic": topic, "loom.event.type": event.type, "loom.event.id": event.id}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
