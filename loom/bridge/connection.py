"""Connection: one live EventStream (gRPC's, or the same-host one) of an agent's session.

The stream writes its session's queue (batching deliveries already waiting) and reads the
client's messages into the session. Everything about the agent that must outlive one stream
(its subscription, the events held for it, calls it has not answered) is the session's
(:mod:`loom.bridge.session`): when an agent reconnects, the old stream's end never touches what
the new stream serves (upstream keyed cleanup by agent id and could).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loom.bridge._pb.loom.v1 import bridge_pb2
from loom.bridge.batching import StreamWriter
from loom.events.qos import DropReason

if TYPE_CHECKING:
    from loom.bridge.session import Session

__all__ = ["Connection"]

log = logging.getLogger("loom.bridge")
_ids = itertools.count(1)


class Connection:
    """State of one live EventStream of ``session``."""

    def __init__(self, session: Session, *, peer: str) -> None:
        self.session = session
        self.agent_id = session.agent_id
        self.id = f"conn-{next(_ids)}"
        self.peer = peer
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.close_code = ""  # a gRPC status name when the server ended the stream for a fault
        self.goodbye = False  # the client said it leaves for good
        # A transport that can write without waiting (the same-host stream) sets this: the first
        # message of a loop turn on an idle stream is then written by whoever sends it.
        self.write_now: Callable[[Any], bool] | None = None
        self._idle = False  # the writer waits on an empty queue
        self._turn_used = False
        self._writer: asyncio.Task[Any] | None = None
        self._cut = False  # close() cancelled the writer (it ends quietly)

    # -- outbound ------------------------------------------------------------------------
    def write_direct(self, msg: Any) -> bool:
        """Write ``msg`` now, skipping the writer task, when that cannot reorder or starve anything:
        the writer is idle on an empty queue and this is the first such write of the loop turn
        (the rest of a burst queues up, so the writer still batches it)."""
        if self.write_now is None or not self._idle or self._turn_used or not self.session.outbound.empty():
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
        """Send a control message (a pong, an error, an action call) without waiting, ahead of
        queued deliveries; False when the stream is closed, or when the client has not read
        thousands of them (then it stalls: the stream is closed)."""
        if self.closed.is_set():
            return False
        if self.write_direct(msg):
            return True
        if not self.session.outbound.put_control(msg):
            self.close("client stalled: it reads none of its control messages", "RESOURCE_EXHAUSTED")
            return False
        return True

    def send_error(self, code: str, message: str, details: dict[str, str] | None = None) -> None:
        self.send(bridge_pb2.ServerEvent(err=bridge_pb2.Error(code=code, message=message, details=details or {})))

    def _too_large(self, d: Any, size: int) -> Any:
        """A delivery over the message limit: counted ``too_large`` on the agent's subscription, and
        the agent is told which event it missed (an ``err`` TOO_LARGE); the stream goes on."""
        session = self.session
        limit = session.server.max_message_bytes
        if session.sub is not None:
            session.sub.count_drop(DropReason.TOO_LARGE, d.concrete_topic)
        details = {
            "topic": d.concrete_topic or d.topic,
            "event_id": d.event.id,
            "event_type": d.event.type,
            "size": str(size),
            "limit": str(limit),
        }
        log.warning("event %s on %s (%d bytes) is over the stream limit of %s", d.event.id, d.topic, size, limit)
        text = (
            f"event {d.event.id} ({d.event.type}) on {details['topic']!r} is {size} bytes, over the {limit}-byte limit"
        )
        return bridge_pb2.ServerEvent(err=bridge_pb2.Error(code="TOO_LARGE", message=text, details=details))

    async def write_all(self, write: Any) -> None:
        """The stream's writer: send the session's queued messages in order until closed;
        consecutive deliveries already waiting go out as one DeliveryBatch when the client takes
        batches. Returns when the stream is closed (what it took and did not write goes back for
        the next stream), also when that happened while a write was stuck on a client that does
        not read (a stall: the write is abandoned and its deliveries counted dropped)."""
        ServerEvent, DeliveryBatch = bridge_pb2.ServerEvent, bridge_pb2.DeliveryBatch  # noqa: N806
        session = self.session
        self._writer = asyncio.current_task()
        writer = StreamWriter(
            session.outbound,
            write,
            end=None,
            one=lambda d: ServerEvent(delivery=d),
            many=(lambda items: ServerEvent(delivery_batch=DeliveryBatch(items=items))) if session.batch else None,
            max_bytes=session.server.max_message_bytes,
            idle=self._set_idle,
            too_large=self._too_large,
            stop=self.closed.is_set,
        )
        try:
            await writer.run()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._cut or task is None or task.uncancel() > 0:  # not (only) our own cancel
                raise
            if self.close_code:  # cut off a client that does not read: what it was sent is lost
                self._lost(writer.in_flight)
        except Exception:
            self._lost(writer.in_flight)  # the write failed: the stream broke under it
            raise

    def _lost(self, deliveries: list[Any]) -> None:
        sub = self.session.sub
        if sub is not None:
            for d in deliveries:
                sub.count_drop(DropReason.DISCONNECTED, d.concrete_topic)

    def _set_idle(self, idle: bool) -> None:
        self._idle = idle

    # -- lifecycle -----------------------------------------------------------------------
    def close(self, reason: str, code: str = "") -> None:
        """End this stream (the session decides, in :meth:`Session.detach`, whether it waits for
        the agent's return). ``code`` (a gRPC status name) marks a fault the client is told about.
        Idempotent."""
        if self.closed.is_set():
            return
        self.close_reason, self.close_code = reason, code
        self.closed.set()
        writer = self._writer
        # An idle writer waits on the session's queue (which a newer stream may serve next): it
        # has nothing in hand. One stuck on a client that does not read (a fault) is cut off there.
        # Otherwise it finishes its write and stops before taking the next message.
        if writer is not None and writer is not asyncio.current_task() and (self._idle or code):
            self._cut = True
            writer.cancel()

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.agent_id} {'closed' if self.closed.is_set() else 'open'}>"
