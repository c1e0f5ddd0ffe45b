"""The collaboration primitives for an agent behind the bridge: everything goes over its stream.

Replies to its pending requests are taken off the stream by the transport (``pending``), the way
an in-process agent's mailbox intercepts them; topics a primitive listens to (a barrier) are
subscribed on the stream for as long as it listens.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from loom.bridge._pb.loom.v1 import bridge_pb2
from loom.collab.collaborator import Collaborator
from loom.collab.inbox import Inbox, PendingInbox
from loom.errors import BrokenError
from loom.events.envelope import Envelope
from loom.events.event import Event
from loom.events.queue import Delivery

if TYPE_CHECKING:
    from loom.bridge.client import BridgeTransport

__all__ = ["RemoteCollaborator"]


class _Listener:
    """A topic the remote agent listens to for a primitive (e.g. a barrier), not for its handler."""

    def __init__(self, transport: BridgeTransport, topic: str, types: tuple[str, ...], maxsize: int) -> None:
        self._t, self.topic, self.types = transport, topic, frozenset(types)
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=maxsize)
        first = topic not in transport._listeners and topic not in transport._patterns
        transport._listeners.setdefault(topic, []).append(self.queue)
        if first:
            transport._send(bridge_pb2.ClientEvent(subscribe=bridge_pb2.Subscription(topic=topic)))

    async def get(self) -> Delivery:
        while True:
            d = await self.queue.get()
            if not self.types or d.event.type in self.types:
                return d

    def close(self) -> None:
        queues = self._t._listeners.get(self.topic, [])
        if self.queue in queues:
            queues.remove(self.queue)
        if not queues:
            self._t._listeners.pop(self.topic, None)
            if self.topic not in self._t._patterns:
                try:
                    self._t._send(bridge_pb2.ClientEvent(unsubscribe=bridge_pb2.Subscription(topic=self.topic)))
                except BrokenError:
                    pass


class RemoteCollaborator(Collaborator):
    """The collaboration primitives for a bridged agent: everything goes over its stream."""

    def __init__(self, transport: BridgeTransport) -> None:
        super().__init__(None, transport.sender)  # type: ignore[arg-type]
        self._t = transport

    def _inbox(self, thread_id: str) -> Inbox:
        return PendingInbox(self._t.pending, self._t._patterns[0])  # the transport's reader intercepts

    async def publish(self, topic: str, event: Event, envelope: Envelope) -> int:
        assert self._t._agent is not None
        return await self._t.publish(self._t._agent, topic, event, envelope)

    def _notify(self, topic: str, event: Event) -> None:
        self._t._send(bridge_pb2.ClientEvent(publish=bridge_pb2.Publish(topic=topic, event=event.to_proto())))

    async def _announce(self, topic: str, event: Event) -> None:
        self._notify(topic, event)

    def _listen(self, topic: str, types: tuple[str, ...], maxsize: int) -> Any:
        return _Listener(self._t, topic, types, maxsize)
