"""Coalescing a run of queued messages into one stream message (used in both directions).

Nothing waits to fill a batch: a lone message leaves at once (a request/reply pays no delay),
and the messages that queued up while the previous write was in flight leave together, up to
a count and a size that keep the batch under the stream's message limit. A single message over
that limit never reaches the stream (it would reset it): the writer hands it to ``too_large``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["NOTHING", "Batcher", "write_queue"]

NOTHING = object()  # "no other message was taken off the queue"


class Batcher:
    """Drains consecutive items of one type from a stream's outbound queue."""

    __slots__ = ("budget", "kind", "limit")

    def __init__(self, kind: type, limit: int = 512, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.kind = kind
        self.limit = limit
        self.budget = max_bytes - 1024  # room for the wrapping message

    def gather(self, queue: asyncio.Queue[Any], first: Any, size: int) -> tuple[list[Any], Any]:
        """``first`` (of ``size`` bytes) and the items of ``kind`` queued right behind it; also the
        item it had to take off the queue but could not add (another kind, or one that would make
        the batch too big), or :data:`NOTHING`. The caller handles that item next, as if it came
        off the queue."""
        items, after = [first], NOTHING
        size += 8
        while len(items) < self.limit and not queue.empty():
            nxt = queue.get_nowait()
            if type(nxt) is not self.kind:
                after = nxt
                break
            size += nxt.ByteSize() + 8
            if size > self.budget:
                after = nxt
                break
            items.append(nxt)
        return items, after


async def write_queue(
    queue: asyncio.Queue[Any],
    write: Callable[[Any], Awaitable[Any]],
    *,
    end: object,
    kind: type,
    one: Callable[[Any], Any],
    many: Callable[[list[Any]], Any] | None,
    max_bytes: int,
    idle: Callable[[bool], None] | None = None,
    too_large: Callable[[Any, int], Any] | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """A stream's writer: ``write`` what comes off ``queue`` in order until ``end`` does, or
    ``stop()`` says so before the next item is taken. Items of ``kind`` go out wrapped,
    ``one(item)`` alone or ``many(items)`` for a run already queued (when ``many`` is given);
    anything else goes out as it is. An item of ``kind`` over the message limit is replaced by
    ``too_large(item, size)`` (what to write instead, or None), or else raises ValueError.
    ``idle(True)`` / ``idle(False)`` bracket each wait on an empty queue."""
    batcher = Batcher(kind, max_bytes=max_bytes)
    item: Any = NOTHING  # taken off the queue and not written yet
    while True:
        if item is NOTHING:
            if stop is not None and stop():
                return
            if idle is not None and queue.empty():
                idle(True)
                try:
                    item = await queue.get()
                finally:
                    idle(False)
            else:
                item = await queue.get()
        if item is end:
            return
        if type(item) is not kind:
            msg, item = item, NOTHING
        else:
            size = item.ByteSize()
            if size > batcher.budget:
                if too_large is None:
                    raise ValueError(f"a {size}-byte message is over the {max_bytes}-byte limit")
                msg, item = too_large(item, size), NOTHING
                if msg is None:
                    continue
            elif many is None:
                msg, item = one(item), NOTHING
            else:
                items, item = batcher.gather(queue, item, size)
                msg = one(items[0]) if len(items) == 1 else many(items)
        await write(msg)
