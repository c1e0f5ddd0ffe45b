"""Publishing: what an SDK agent's :class:`~loom.bridge.client.BridgeTransport` sends to the hub.

Events leave through the transport's outbound queue (where plain emits batch), or, for a request
or a reply on an idle stream, written at once by the task that sends them. With telemetry on each
goes out in a ``bridge.send`` span whose trace keys the event carries (:mod:`loom.bridge.observed`);
with it off, one attribute test and the same path as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from loom.bridge._grpc import grpc
from loom.bridge._pb.loom.v1 import bridge_pb2
from loom.bridge.observed import traced_publish, traced_publish_nowait
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.bridge.outbox import Outbox
    from loom.events.event import Event
    from loom.telemetry.seam import Instruments

__all__ = ["Publishing"]


class Publishing:
    """The Link's publishing half of :class:`~loom.bridge.client.BridgeTransport` (a base class)."""

    instruments: Instruments
    sender: str
    max_message_bytes: int
    connected: asyncio.Event
    dropped: dict[str, int]
    _outbound: Outbox
    _stream: Any
    _wlock: asyncio.Lock

    def publish(self, topic: str, event: Event) -> Awaitable[int]:
        if self.instruments.tracer is not None:
            return traced_publish(self.instruments, self.sender, topic, event, self._queue)
        return self._publish(bridge_pb2.Publish(topic=topic, event=event.to_proto()), now=False)

    def send(self, topic: str, event: Event) -> Awaitable[int]:
        if self.instruments.tracer is not None:
            return traced_publish(self.instruments, self.sender, topic, event, self._write_now)
        return self._publish(bridge_pb2.Publish(topic=topic, event=event.to_proto()), now=True)

    def request(self, topic: str, event: Event) -> Awaitable[int]:
        # The hub answers err NO_SUBSCRIBERS when nothing subscribes (see _on_error).
        if self.instruments.tracer is not None:
            return traced_publish(self.instruments, self.sender, topic, event, self._write_now, expect_reply=True)
        return self._publish(bridge_pb2.Publish(topic=topic, event=event.to_proto(), expect_reply=True), now=True)

    def _queue(self, msg: Any) -> Awaitable[int]:
        return self._publish(msg, now=False)

    def _write_now(self, msg: Any) -> Awaitable[int]:
        return self._publish(msg, now=True)

    def unrouted(self, topic: str) -> bool:
        return False  # not known here: the hub tells the request's collector (NO_SUBSCRIBERS)

    async def _publish(self, msg: Any, *, now: bool) -> int:
        if msg.ByteSize() > self.max_message_bytes - 1024:
            raise LoomError(f"event {msg.event.id} is {msg.ByteSize()} bytes: over the bridge's message limit")
        queue, stream = self._outbound, self._stream
        if now and stream is not None and self.connected.is_set() and not self._wlock.locked() and queue.empty():
            # A request or a reply (someone awaits it) on an idle stream: written here and now, not
            # one task hop later by the writer. Plain emits keep to the queue, where they batch.
            async with self._wlock:
                try:
                    await stream.write(bridge_pb2.ClientEvent(publish=msg))
                    return 1
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, ConnectionError):
                    pass  # the stream just broke: the message waits for the next one instead
        await queue.put(msg)  # waits for room: a fast publisher is paced by the stream, never dropped
        return 1  # the hub publishes asynchronously: deliveries are not known here

    def publish_nowait(self, topic: str, event: Event) -> int:
        if self.instruments.tracer is not None:
            return traced_publish_nowait(self.instruments, self.sender, topic, event, self._put_nowait)
        return self._put_nowait(bridge_pb2.Publish(topic=topic, event=event.to_proto()))

    def _put_nowait(self, msg: Any) -> int:
        try:
            self._outbound.put_nowait(msg)
        except asyncio.QueueFull:
            self._count("queue_full")
            return 0
        return 1

    def _count(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
