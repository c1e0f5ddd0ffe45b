"""DeliveryQueue: the bounded queue under every subscription, and how its readers and writers wait.

A ``deque`` plus waiter futures, not an ``asyncio.Queue``: the bus needs non-blocking offers
with per-policy overflow (see :mod:`loom.events.subscription`), and the hot path must stay at
one append per delivery. One delivery in 64 is timestamped to summarise queueing latency.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, NamedTuple

from loom.errors import SubscriptionClosed, UsageError, WouldBlock
from loom.events.event import Event

__all__ = ["Delivery", "DeliveryQueue"]

_LATENCY_SAMPLE_MASK = 63  # time one delivery in 64
_LATENCY_WINDOW = 1024


class Delivery(NamedTuple):
    """What a subscriber receives: the concrete topic and the event."""

    topic: str
    event: Event


_new_delivery = tuple.__new__  # Delivery(...) through NamedTuple.__new__ costs 4x more


class DeliveryQueue:
    """Storage and waiting of a subscription. Readers: ``async for``, :meth:`get`, :meth:`batches`."""

    __slots__ = (
        "_closed",
        "_coalesce_key",
        "_consumer",
        "_delivered",
        "_getters",
        "_head",
        "_held",
        "_high_water",
        "_keys",
        "_latency",
        "_maxsize",
        "_putters",
        "_queue",
        "_samples",
        "close_reason",
        "id",
    )

    def __init__(self, queue_id: str, maxsize: int) -> None:
        self.id = queue_id
        self._maxsize = maxsize
        self._queue: deque[Delivery] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self.close_reason = ""
        self._consumer: asyncio.Task[Any] | None = None
        self._held: str | None = None  # while set, a full queue drops (counted with this reason) instead of waiting
        self._head = 0  # absolute index of the queue's first item
        self._delivered = 0
        self._high_water = 0
        self._samples: deque[tuple[int, int]] = deque()
        self._latency: deque[int] = deque(maxlen=_LATENCY_WINDOW)
        # COALESCE bookkeeping: key -> absolute index of the newest queued event with that key.
        self._coalesce_key: Callable[[Event], Hashable] | None = None
        self._keys: dict[Hashable, int] | None = None

    def qsize(self) -> int:
        """Events queued and not yet read."""
        return len(self._queue)

    def _latency_summary(self) -> tuple[float | None, float | None, int]:
        lat = sorted(self._latency)
        n = len(lat)
        if not n:
            return None, None, 0
        return lat[n // 2] / 1000, lat[min(n - 1, (n * 99) // 100)] / 1000, n

    # -- consumer side -------------------------------------------------------------------
    def __aiter__(self) -> DeliveryQueue:
        return self

    async def __anext__(self) -> Delivery:
        if self._queue:
            return self._pop()
        if await self._wait_item():
            return self._pop()
        raise StopAsyncIteration

    async def get(self) -> Delivery:
        """The next delivery, waiting if needed.

        Raises:
            SubscriptionClosed: closed and drained.
        """
        if self._queue or await self._wait_item():
            return self._pop()
        raise SubscriptionClosed(self.id, self.close_reason)

    def get_nowait(self) -> Delivery:
        """The next delivery if one is queued.

        Raises:
            WouldBlock: nothing queued.
            SubscriptionClosed: closed and drained.
        """
        if self._queue:
            return self._pop()
        if self._closed:
            raise SubscriptionClosed(self.id, self.close_reason)
        raise WouldBlock(f"subscription {self.id} has nothing queued")

    async def batches(self, max_items: int = 256) -> AsyncIterator[list[Delivery]]:
        """Yield lists of up to ``max_items`` deliveries: wait for one, take what is queued.

        Raises:
            UsageError: ``max_items`` < 1.
        """
        if max_items < 1:
            raise UsageError(f"max_items must be >= 1, got {max_items}")
        while self._queue or await self._wait_item():
            pop = self._pop
            q = self._queue
            yield [pop() for _ in range(min(max_items, len(q)))]

    def _pop(self) -> Delivery:
        item = self._queue.popleft()
        idx = self._head
        self._head = idx + 1
        if self._keys is not None:
            key = self._coalesce_key(item.event)  # type: ignore[misc]
            if self._keys.get(key) == idx:
                del self._keys[key]
        if self._samples:
            self._take_sample(idx)
        if self._putters:
            self._wake(self._putters)
        return item

    def _take_sample(self, idx: int) -> None:
        samples = self._samples
        while samples and samples[0][0] < idx:  # its event was evicted
            samples.popleft()
        if samples and samples[0][0] == idx:
            ns = time.perf_counter_ns() - samples.popleft()[1]
            self._latency.append(ns)
            self._sampled(ns)

    def _sampled(self, ns: int) -> None:
        """A sampled delivery took ``ns`` from queueing to its reader (a subscription reports it)."""

    async def _wait_item(self) -> bool:
        """Wait until an item is queued (True) or the subscription is closed and drained (False)."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            if self._closed:
                return False
            task = asyncio.current_task()
            if task is not self._consumer:
                self._bind_consumer(task)
            fut = loop.create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                try:
                    self._getters.remove(fut)
                except ValueError:
                    # We were woken and cancelled at once: pass the wake-up on.
                    if self._queue and self._getters:
                        self._wake(self._getters)
                raise
        return True

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _bind_consumer(self, task: asyncio.Task[Any] | None) -> None:
        self._consumer = task
        if task is not None:
            task.add_done_callback(self._consumer_done)

    def _consumer_done(self, task: asyncio.Task[Any]) -> None:
        # A task that was reading this subscription ended. If publishers are already blocked on
        # it, nobody will ever make room: close it rather than stall them forever.
        if task is self._consumer and not self._closed and self._putters:
            self._consumer_gone(len(self._putters))

    def _consumer_gone(self, waiting_publishers: int) -> None:
        """The reader ended while publishers wait for room (the subclass closes the queue)."""
        raise NotImplementedError

    def _drop_held(self, item: Delivery) -> int:
        """A full held queue refuses ``item`` (the subclass counts it); returns 0."""
        raise NotImplementedError

    def _append(self, item: Delivery) -> int:
        q = self._queue
        q.append(item)
        if len(q) > self._high_water:
            self._high_water = len(q)
        self._delivered += 1
        if not self._delivered & _LATENCY_SAMPLE_MASK:
            self._samples.append((self._head + len(q) - 1, time.perf_counter_ns()))
        if self._getters:
            self._wake(self._getters)
        return 1

    def _pop_evicted(self) -> None:
        self._queue.popleft()
        self._head += 1

    async def _put_wait(self, item: Delivery) -> int:
        """Wait for room, then queue (BATCHED/BACKGROUND). Returns 1, or 0 if closed meanwhile
        (then the event is counted as dropped with the reason of the close)."""
        loop = asyncio.get_running_loop()
        while len(self._queue) >= self._maxsize:
            if self._closed:
                return self._drop_held(item)
            fut = loop.create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                try:
                    self._putters.remove(fut)
                except ValueError:
                    if len(self._queue) < self._maxsize and self._putters:
                        self._wake(self._putters)
                raise
            if self._closed or (self._held is not None and len(self._queue) >= self._maxsize):
                return self._drop_held(item)
        return self._append(item)

    def _shutdown(self, reason: str) -> None:
        """Mark closed and wake every waiter (publishers waiting for room count their event as
        dropped, with the reason the closer gave, else ``closed``/``consumer_gone``)."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        if self._held is None:
            self._held = "consumer_gone" if reason == "consumer_gone" else "closed"
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
