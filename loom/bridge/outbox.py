"""Outbox: what a stream's writer sends, in two lanes.

**Data** (deliveries on the hub, publishes in the SDK) is bounded: ``put`` waits for room,
``put_nowait`` raises ``QueueFull``; that bound is the stream's backpressure. **Control** messages
(pongs, errors, action calls and results, (un)subscribes, the goodbye) are small, never wait
behind data and never count against its bound, so a busy stream still answers; a control lane
that grows past its own cap means the peer is not reading at all. A writer that took messages it
then must not write (its stream was replaced or ended) puts them back at the front, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["EMPTY", "Outbox"]

EMPTY = object()  # what peek() returns when nothing is queued


class Outbox:
    """Two FIFO lanes read by one writer: control first, then data.

    Args:
        kind: the type of data messages (anything else is control).
        maxsize: the bound of the data lane.
        control_cap: the control lane's size that means the peer stopped reading.
    """

    __slots__ = ("_control", "_data", "_getter", "_putters", "control_cap", "kind", "maxsize")

    def __init__(self, kind: type, maxsize: int, control_cap: int = 4096) -> None:
        self.kind = kind
        self.maxsize = maxsize
        self.control_cap = control_cap
        self._data: deque[Any] = deque()
        self._control: deque[Any] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()

    # -- sizes ---------------------------------------------------------------------------
    def qsize(self) -> int:
        """Data messages queued (what the bound applies to)."""
        return len(self._data)

    def full(self) -> bool:
        return len(self._data) >= self.maxsize

    def empty(self) -> bool:
        return not self._data and not self._control

    # -- producers -----------------------------------------------------------------------
    def put_nowait(self, msg: Any) -> None:
        """Queue a data message.

        Raises:
            asyncio.QueueFull: the data lane is full.
        """
        if len(self._data) >= self.maxsize:
            raise asyncio.QueueFull
        self._data.append(msg)
        self._wake_getter()

    async def put(self, msg: Any) -> None:
        """Queue a data message, waiting for room."""
        while len(self._data) >= self.maxsize:
            fut = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                if fut in self._putters:
                    self._putters.remove(fut)
                elif len(self._data) < self.maxsize:
                    self._wake_putter()  # woken and cancelled at once: pass the turn on
                raise
        self._data.append(msg)
        self._wake_getter()

    def put_control(self, msg: Any) -> bool:
        """Queue a control message; False when the control lane is at its cap (the peer is not reading)."""
        if len(self._control) >= self.control_cap:
            return False
        self._control.append(msg)
        self._wake_getter()
        return True

    def requeue(self, msgs: list[Any]) -> None:
        """Put back messages a writer took and did not write, at the front of their lanes, in order."""
        kind = self.kind
        for msg in reversed(msgs):
            (self._data if type(msg) is kind else self._control).appendleft(msg)
        if msgs:
            self._wake_getter()

    # -- the writer ----------------------------------------------------------------------
    def get_nowait(self) -> Any:
        """The next message (control first).

        Raises:
            asyncio.QueueEmpty: nothing queued.
        """
        if self._control:
            return self._control.popleft()
        if self._data:
            msg = self._data.popleft()
            if self._putters:
                self._wake_putter()
            return msg
        raise asyncio.QueueEmpty

    def peek(self) -> Any:
        """What :meth:`get_nowait` would return, left in place; :data:`EMPTY` when nothing is queued."""
        if self._control:
            return self._control[0]
        return self._data[0] if self._data else EMPTY

    async def get(self) -> Any:
        """The next message, waiting for one (one reader at a time: a writer whose stream was
        replaced is cancelled while the next one may already wait)."""
        while not self._data and not self._control:
            fut = self._getter = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                if self._getter is fut:
                    self._getter = None
        return self.get_nowait()

    def drain(self) -> list[Any]:
        """Everything queued, control first, emptying both lanes (publishers waiting for room are woken)."""
        msgs = [*self._control, *self._data]
        self._control.clear()
        self._data.clear()
        while self._putters:
            self._wake_putter()
        return msgs

    def _wake_getter(self) -> None:
        fut = self._getter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _wake_putter(self) -> None:
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
