"""Coalescing a run of queued messages into one stream message (used in both directions).

A lone message leaves at once; on a busy stream (the previous message went out under a
millisecond ago) the writer yields one loop turn first, so the rest of a burst can join it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["NOTHING", "Batcher"]

NOTHING = object()  # "no other message was taken off the queue"


class Batcher:
    """Drains consecutive items of one type from a stream's outbound queue."""

    __slots__ = ("_last", "kind", "limit")

    def __init__(self, kind: type, limit: int = 512) -> None:
        self.kind = kind
        self.limit = limit
        self._last = 0.0

    async def gather(self, queue: asyncio.Queue[Any], first: Any) -> tuple[list[Any], Any]:
        """``first`` and the items of ``kind`` queued right behind it; also the first item of another
        kind it had to take off the queue (or :data:`NOTHING`), which the caller sends next."""
        if queue.empty():
            now = time.monotonic()
            busy, self._last = now - self._last < 0.001, now
            if busy:
                await asyncio.sleep(0)
        items, after = [first], NOTHING
        while len(items) < self.limit and not queue.empty():
            nxt = queue.get_nowait()
            if type(nxt) is not self.kind:
                after = nxt
                break
            items.append(nxt)
        return items, after
