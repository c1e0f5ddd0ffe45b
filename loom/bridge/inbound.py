"""Inbound: what the hub delivers to an SDK agent, handed to the bus of its process.

The stream's reader must never wait on a full mailbox: the reply a handler is waiting for would
stay unread behind the backlog (in-process that reply is taken before the mailbox; here it is
behind it on the wire). So a delivery whose correlation id a request of this agent waits on is
taken at once; everything else goes to the bus in order: at once when nothing there would make
it wait, else into a backlog a task feeds to the bus (where a full BATCHED mailbox waits, as
in-process). Only when the backlog passes its limit does the reader wait, and through the
stream, the hub (backpressure).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loom.events.queue import Delivery

if TYPE_CHECKING:
    from loom.events.bus import EventBus
    from loom.events.event import Event

__all__ = ["Inbound"]


class Inbound:
    """Feeds one agent's deliveries into ``bus``; ``intercept(delivery) -> bool`` takes replies.

    Args:
        limit: deliveries read and not yet on the bus before the reader waits.
    """

    def __init__(self, bus: EventBus, intercept: Callable[[Delivery], bool], spawn: Any, limit: int = 4096) -> None:
        self._bus = bus
        self._intercept = intercept
        self.limit = limit
        self._backlog: deque[Delivery] = deque()
        self._ready = asyncio.Event()  # the backlog has something
        self._room = asyncio.Event()  # the backlog is below its limit
        self._room.set()
        self._feeder = spawn(self._feed(), name="loom.bridge.client.inbound")

    def deliver(self, topic: str, event: Event) -> None:
        """Hand one delivery on (never waits)."""
        item = Delivery(topic, event)
        if self._intercept(item):
            return  # a reply a request here waits for
        if self._backlog or self._bus.offer(topic, event) is None:
            self._backlog.append(item)
            self._ready.set()
            if len(self._backlog) >= self.limit:
                self._room.clear()

    async def room(self) -> None:
        """Return when the backlog is below its limit (the reader calls it between messages)."""
        if not self._room.is_set():
            await self._room.wait()

    async def _feed(self) -> None:
        backlog, publish = self._backlog, self._bus.publish
        while True:
            await self._ready.wait()
            while backlog:
                item = backlog[0]
                await publish(item.topic, item.event)  # waits for room in a full mailbox, in order
                backlog.popleft()
                if len(backlog) < self.limit // 2:
                    self._room.set()
            self._ready.clear()
