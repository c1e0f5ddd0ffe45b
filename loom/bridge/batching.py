"""A stream's writer (used in both directions): what comes off its Outbox goes out in order,
a run of queued data messages coalesced into one stream message.

Nothing waits to fill a batch: a lone message leaves at once (a request/reply pays no delay),
and the messages that queued up while the previous write was in flight leave together, up to
a count and a size that keep the batch under the stream's message limit. A single message over
that limit never reaches the stream (it would reset it): the writer hands it to ``too_large``.
A writer whose stream is no longer the current one puts back what it took, unwritten, so the
next stream's writer sends it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from loom.bridge.outbox import Outbox

__all__ = ["Batcher", "Stale", "StreamWriter"]


class Stale(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a ``write`` function that finds its stream is no longer the current one: the
    message was not written and is put back."""


class Batcher:
    """Takes the data messages queued right behind a first one, as many as fit one message."""

    __slots__ = ("budget", "kind", "limit")

    def __init__(self, kind: type, limit: int = 512, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.kind = kind
        self.limit = limit
        self.budget = max_bytes - 1024  # room for the wrapping message

    def gather(self, outbox: Outbox, first: Any, size: int) -> list[Any]:
        """``first`` (of ``size`` bytes) and the data messages queued right behind it that fit;
        the first one that does not (or a control message) stays queued: nothing is taken that
        is not written with this batch."""
        items = [first]
        size += 8
        while len(items) < self.limit:
            nxt = outbox.peek()
            if type(nxt) is not self.kind:  # EMPTY, or a control message: it goes next, alone
                break
            size += nxt.ByteSize() + 8
            if size > self.budget:
                break
            items.append(outbox.get_nowait())
        return items


class StreamWriter:
    """``write`` what comes off ``outbox`` in order until ``end`` does, or ``stop()`` says the
    stream is no longer the one to write (checked before each write: what was taken goes back).
    Data messages go out wrapped, ``one(item)`` alone or ``many(items)`` for a run already queued
    (when ``many`` is given); control messages as they are. A data message over the limit is
    replaced by ``too_large(item, size)`` (what to write instead, or None), else ValueError.
    ``idle(True)`` / ``idle(False)`` bracket each wait on an empty outbox. ``in_flight`` holds the
    data messages of the write under way (for an owner whose write failed or was cut off to
    count them: a failed write most likely did not arrive)."""

    def __init__(
        self,
        outbox: Outbox,
        write: Callable[[Any], Awaitable[Any]],
        *,
        end: object,
        one: Callable[[Any], Any],
        many: Callable[[list[Any]], Any] | None,
        max_bytes: int,
        idle: Callable[[bool], None] | None = None,
        too_large: Callable[[Any, int], Any] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.outbox, self.write, self.end = outbox, write, end
        self.one, self.many, self.idle, self.too_large = one, many, idle, too_large
        self.stop = stop or (lambda: False)
        self.max_bytes = max_bytes
        self.in_flight: list[Any] = []

    async def run(self) -> None:
        outbox, kind, idle, stop = self.outbox, self.outbox.kind, self.idle, self.stop
        batcher = Batcher(kind, max_bytes=self.max_bytes)
        while True:
            if stop():
                return
            if idle is not None and outbox.empty():
                idle(True)
                try:
                    item = await outbox.get()
                finally:
                    idle(False)
            else:
                item = await outbox.get()
            if item is self.end:
                return
            if type(item) is not kind:
                items, msg = [item], item
            else:
                size = item.ByteSize()
                if size > batcher.budget:
                    if self.too_large is None:
                        raise ValueError(f"a {size}-byte message is over the {self.max_bytes}-byte limit")
                    items, msg = [], self.too_large(item, size)
                    if msg is None:
                        continue
                elif self.many is None:
                    items, msg = [item], self.one(item)
                else:
                    items = batcher.gather(outbox, item, size)
                    msg = self.one(items[0]) if len(items) == 1 else self.many(items)
            if stop():  # the stream stopped being ours while this was taken: it goes back
                outbox.requeue(items)
                return
            self.in_flight = [i for i in items if type(i) is kind]
            try:
                await self.write(msg)
            except Stale:
                outbox.requeue(items)
                return
            self.in_flight = []
