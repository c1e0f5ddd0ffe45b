"""Coalescing a run of queued messages into one stream message (used in both directions).

Nothing waits to fill a batch: a lone message leaves at once (a request/reply pays no delay),
and the messages that queued up while the previous write was in flight leave together.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["NOTHING", "Batcher"]

NOTHING = object()  # "no other message was taken off the queue"


class Batcher:
    """Drains consecutive items of one type from a stream's outbound queue."""

    __slots__ = ("kind", "limit")

    def __init__(self, kind: type, limit: int = 512) -> None:
        self.kind = kind
        self.limit = limit

    def gather(self, queue: asyncio.Queue[Any], first: Any) -> tuple[list[Any], Any]:
        """``first`` and the items of ``kind`` queued right behind it; also the first item of another
        kind it had to take off the queue (or :data:`NOTHING`), which the caller sends next."""
        items, after = [first], NOTHING
        while len(items) < self.limit and not queue.empty():
            nxt = queue.get_nowait()
            if type(nxt) is not self.kind:
                after = nxt
                break
            items.append(nxt)
        return items, after
