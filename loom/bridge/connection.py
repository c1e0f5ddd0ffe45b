"""One EventStream connection: its subscriptions, its outbound queue, its pending action calls.

Everything is keyed by the connection, not by the agent id: when an agent reconnects, the old
stream's cleanup can never tear down the new stream's subscriptions (upstream's did).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loom.bridge._pb.loom.v1 import bridge_pb2
from loom.bridge.batching import write_queue
from loom.errors import InvalidTopic, LoomError, SubscriptionClosed
from loom.events.event import Event
from loom.events.qos import QoS
from loom.events.subscription import Subscription

if TYPE_CHECKING:
    from loom.bridge.server import BridgeServer

__all__ = ["CLOSE", "Connection", "StreamRefused"]

log = logging.getLogger("loom.bridge")
_ids = itertools.count(1)
CLOSE = object()  # put in the outbound queue to end the writer


class StreamRefused(Exception):
    """A stream's opening was wrong; ``code`` is the gRPC status name to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Connection:
    """State of one live EventStream."""

    def __init__(
        self, server: BridgeServer, agent_id: str, *, qos: QoS, queue: int, peer: str, batch: bool = False
    ) -> None:
        self.server = server
        self.agent_id = agent_id
        self.id = f"conn-{next(_ids)}"
        self.peer = peer
        self.qos = qos
        self.queue_size = queue
        self.batch = batch  # the client takes DeliveryBatch messages
        self.outbound: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue)
        self.subscriptions: dict[str, Subscription] = {}
        self.forwarders: dict[str, asyncio.Task[None]] = {}
        self.pending: dict[str, asyncio.Future[Any]] = {}  # action-call id -> the caller's future
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.close_code = ""  # a gRPC status name when the server ended the stream for a fault
        self.delivered = 0
        self.received = 0
        # A transport that can write without waiting (the same-host stream) sets this: the first
        # message of a loop turn on an idle stream is then written by whoever sends it.
        self.write_now: Callable[[Any], bool] | None = None
        self._idle = False  # the writer waits on an empty queue
        self._turn_used = False
        self._holding: set[str] = set()  # patterns whose forwarder waits for room with an event in hand
        self._writer: asyncio.Task[Any] | None = None
        self._cut = False  # the writer was cancelled because the client stopped reading

    # -- subscriptions -------------------------------------------------------------------
    def subscribe(self, pattern: str) -> None:
        """Forward events on ``pattern`` as Deliveries whose topic is the pattern (as upstream)."""
        if pattern in self.subscriptions or self.closed.is_set():
            return
        outbound = self.outbound
        sub: Subscription | None = None

        def direct(item: Any) -> bool:
            # The common case, synchronously in the publisher: room in the stream and nothing of this
            # subscription waiting ahead -> straight into the stream's queue (no forwarder task hop).
            if sub is None or sub.qsize() or pattern in self._holding or outbound.full() or self.closed.is_set():
                return False  # the forwarder takes it, in order, with the QoS and stall rules
            d = _delivery(pattern, item.topic, item.event)
            if not self._write_direct(d):
                outbound.put_nowait(d)
            self.delivered += 1
            return True

        sub = self.server.rt.bus.subscribe(
            pattern, qos=self.qos, maxsize=self.queue_size, name=f"bridge-{self.agent_id}", intercept=direct
        )
        self.subscriptions[pattern] = sub
        self.forwarders[pattern] = self.server.rt.spawn(
            self._forward(pattern, sub), name=f"loom.bridge.forward:{self.agent_id}:{pattern}"
        )

    def unsubscribe(self, pattern: str) -> None:
        sub = self.subscriptions.pop(pattern, None)
        if sub is not None:
            sub.close()
        task = self.forwarders.pop(pattern, None)
        if task is not None:
            task.cancel()

    async def _forward(self, pattern: str, sub: Subscription) -> None:
        put = self.outbound.put
        stall = self.server.stall_timeout
        try:
            async for topic, event in sub:
                msg = _delivery(pattern, topic, event)
                if self.outbound.full():
                    self._holding.add(pattern)  # later events of this pattern queue behind this one
                    try:
                        async with asyncio.timeout(stall):
                            await put(msg)
                    except TimeoutError:
                        self.close(f"client stalled: no room in its stream for {stall:g}s", "RESOURCE_EXHAUSTED")
                        return
                    finally:
                        self._holding.discard(pattern)
                else:
                    self.outbound.put_nowait(msg)
                self.delivered += 1
        except SubscriptionClosed:
            return

    # -- inbound -------------------------------------------------------------------------
    async def handle(self, msg: Any) -> None:
        """One ClientEvent from the agent."""
        kind = msg.WhichOneof("msg")
        self.received += 1
        if kind == "publish":
            await self._publish(msg.publish)
        elif kind == "publish_batch":
            for pub in msg.publish_batch.items:
                await self._publish(pub)
        elif kind == "ping":
            self.send(bridge_pb2.ServerEvent(pong=bridge_pb2.HeartbeatResponse(timestamp_ms=_now_ms(), status="ok")))
            self.server.rt.directory.heartbeat(self.agent_id)
        elif kind == "action_result":
            fut = self.pending.pop(msg.action_result.id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.action_result)
        elif kind == "subscribe":
            self._checked(self.subscribe, msg.subscribe.topic)
        elif kind == "unsubscribe":
            self.unsubscribe(msg.unsubscribe.topic)
        # further acks and empty messages are ignored, as upstream does

    async def _publish(self, pub: Any) -> None:
        if not pub.HasField("event"):
            return
        try:
            event = Event.from_proto(pub.event)
            await self.server.rt.bus.publish(pub.topic, event, timeout=self.server.stall_timeout)
        except (LoomError, ValueError, TypeError) as exc:
            self.send_error("INVALID_ARGUMENT", f"publish to {pub.topic!r} refused: {exc}")

    def _checked(self, fn: Any, pattern: str) -> None:
        try:
            fn(pattern)
        except (InvalidTopic, TypeError) as exc:
            self.send_error("INVALID_ARGUMENT", str(exc))

    # -- outbound ------------------------------------------------------------------------
    def _write_direct(self, msg: Any) -> bool:
        """Write ``msg`` now, skipping the writer task, when that cannot reorder or starve anything:
        the writer is idle on an empty queue and this is the first such write of the loop turn
        (the rest of a burst queues up, so the writer still batches it)."""
        if self.write_now is None or not self._idle or self._turn_used or self.outbound.qsize():
            return False
        if type(msg) is bridge_pb2.Delivery:
            msg = bridge_pb2.ServerEvent(delivery=msg)
        if not self.write_now(msg):
            return False
        self._turn_used = True
        asyncio.get_running_loop().call_soon(self._next_turn)
        return True

    def _next_turn(self) -> None:
        self._turn_used = False

    def send(self, msg: Any) -> bool:
        """Queue a server message without waiting; False (and the stream is closed) when full."""
        if self._write_direct(msg):
            return True
        try:
            self.outbound.put_nowait(msg)
        except asyncio.QueueFull:
            self.close("client stalled: its stream queue is full", "RESOURCE_EXHAUSTED")
            return False
        return True

    def send_error(self, code: str, message: str) -> None:
        self.send(bridge_pb2.ServerEvent(err=bridge_pb2.Error(code=code, message=message)))

    # -- lifecycle -----------------------------------------------------------------------
    def close(self, reason: str, code: str = "") -> None:
        """End the stream: subscriptions closed, forwarders cancelled, pending calls failed. Idempotent.

        ``code`` (a gRPC status name) marks a fault the client is told about."""
        if self.closed.is_set():
            return
        self.close_reason, self.close_code = reason, code
        self.closed.set()
        while True:  # wake the writer, even when the queue is full (what is queued no longer matters)
            try:
                self.outbound.put_nowait(CLOSE)
                break
            except asyncio.QueueFull:
                self.outbound.get_nowait()
        for pattern in list(self.subscriptions):
            self.unsubscribe(pattern)
        writer = self._writer
        if code and writer is not None and not self._idle and writer is not asyncio.current_task():
            self._cut = True  # the writer is stuck on a client that does not read: stop it there
            writer.cancel()
        for call_id, fut in list(self.pending.items()):
            if not fut.done():
                fut.set_exception(ConnectionError(f"agent {self.agent_id!r} disconnected ({reason})"))
                fut.exception()  # the caller may already be gone (timed out): do not warn
            self.pending.pop(call_id, None)
        self.server._connection_closed(self)

    async def write_all(self, write: Any) -> None:
        """The stream's writer: send queued messages in order until closed; consecutive deliveries
        already waiting go out as one DeliveryBatch when the client takes batches. Returns when the
        stream is closed, also when that happened while a write was stuck on a client that does not
        read (a stall: the write is abandoned)."""
        ServerEvent, DeliveryBatch = bridge_pb2.ServerEvent, bridge_pb2.DeliveryBatch  # noqa: N806
        self._writer = asyncio.current_task()
        try:
            await write_queue(
                self.outbound,
                write,
                end=CLOSE,
                kind=bridge_pb2.Delivery,
                one=lambda d: ServerEvent(delivery=d),
                many=(lambda items: ServerEvent(delivery_batch=DeliveryBatch(items=items))) if self.batch else None,
                max_bytes=self.server.max_message_bytes,
                idle=self._set_idle,
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._cut or task is None or task.uncancel() > 0:  # not (only) our own cancel
                raise

    def _set_idle(self, idle: bool) -> None:
        self._idle = idle

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.agent_id} {len(self.subscriptions)} subscriptions>"


def _delivery(pattern: str, topic: str, event: Event) -> Any:
    """A bare Delivery (the writer wraps it, alone or in a DeliveryBatch with its neighbours)."""
    return bridge_pb2.Delivery(topic=pattern, event=event.to_proto(), concrete_topic=topic)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
