"""The one place where Loom starts background tasks, and where callers wait on them.

Every task has an owner (a :class:`Supervisor`, owned by a :class:`loom.Loom`) and a name
(``loom.<component>.<purpose>[:<id>]``). A failing task is logged, never silently lost; closing
the supervisor cancels and awaits everything it started.

Waits on the owner's work register as **waiters**: when the owner stops,
:meth:`Supervisor.stop_waiters` fails each one with :class:`~loom.errors.RuntimeStopped`, at once,
instead of letting its caller wait out a timeout or get an unrelated error from a part closed under
it. A waiter is anything with ``fail(error)``: a request's reply collector fails its own future
(cheap: the request/reply hot path), a :class:`Guard` cancels the task that waits inside it (a tool
call in flight) and turns that cancellation into RuntimeStopped. A waiter watched with a timeout
is also told ``expire()`` at its deadline: all deadlines share one loop timer (a loop timer per
request, armed and cancelled, cost about 2 µs of a 24 µs request/reply here: docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import logging
import sys
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from loom.errors import RuntimeStopped

__all__ = ["Guard", "Supervisor", "Waiter"]

log = logging.getLogger("loom")
T = TypeVar("T")


class Waiter(Protocol):
    """Something waiting on the owner's work, ended by :meth:`fail` when the owner stops (and,
    when watched with a timeout, told ``expire()`` at its deadline)."""

    def fail(self, error: BaseException) -> None: ...


class Supervisor:
    """Owns a set of named tasks on the running loop."""

    __slots__ = ("_closed", "_deadlines", "_seq", "_stopped", "_tasks", "_timer", "_timer_when", "_waiters", "name")

    def __init__(self, name: str = "loom") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._waiters: dict[Waiter, int] = {}  # waiter -> the watch it is in (its deadline entry's seq)
        self._stopped: set[asyncio.Task[Any]] = set()  # tasks a guard cancelled for the stop
        self._deadlines: list[tuple[float, int, Any]] = []  # heap of (when, seq, waiter); stale ones pruned
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None  # the one loop timer, for the earliest deadline
        self._timer_when = 0.0

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task named ``name`` on the running loop, in a fresh ``contextvars``
        context: a task the runtime owns outlives whatever spawned it, so it must not inherit the
        caller's current span (it would stay that span's child long after the span ended).

        Raises:
            RuntimeStopped: the supervisor is closed (the coroutine is closed, not leaked).
            RuntimeError: no running event loop in this thread.
        """
        if self._closed:
            coro.close()
            raise RuntimeStopped(f"{self.name} is stopped; cannot start task {name!r}")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()  # never leave an un-awaited coroutine behind
            raise RuntimeError(f"cannot start task {name!r}: no running event loop in this thread") from None
        task = loop.create_task(coro, name=name, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # In a kernel an unobserved task error is otherwise invisible: log it, and say so once.
            log.error("task %s failed", task.get_name(), exc_info=exc)
            print(f"[loom] task {task.get_name()} failed: {exc!r}", file=sys.stderr)

    def guard(self) -> Guard:
        """``with supervisor.guard():`` around a wait on something this owner runs."""
        return Guard(self)

    def watch(self, waiter: Waiter, timeout: float | None = None) -> None:
        """Register ``waiter`` until :meth:`unwatch`; with ``timeout`` (seconds) it is told
        ``expire()`` if still watched then.

        Raises:
            RuntimeStopped: the owner is stopping or stopped (nothing new may wait on it).
        """
        if self._closed:
            raise RuntimeStopped(f"{self.name} is stopped")
        self._seq = seq = self._seq + 1
        waiters = self._waiters
        waiters[waiter] = seq
        if timeout is None:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + timeout
        heap = self._deadlines
        heapq.heappush(heap, (when, seq, waiter))
        if self._timer is None or when < self._timer_when:
            self._arm(loop, when)
        elif len(heap) > 64 + 2 * len(waiters):  # most entries belong to waits that already ended
            self._deadlines = [entry for entry in heap if waiters.get(entry[2]) == entry[1]]
            heapq.heapify(self._deadlines)

    def unwatch(self, waiter: Waiter) -> None:
        self._waiters.pop(waiter, None)  # its deadline entry, if any, goes when met or pruned

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire_due, loop)
        self._timer_when = when

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now, heap, waiters = loop.time(), self._deadlines, self._waiters
        while heap and (heap[0][0] <= now or waiters.get(heap[0][2]) != heap[0][1]):
            _, seq, waiter = heapq.heappop(heap)
            if waiters.get(waiter) == seq:  # still in the watch this deadline belongs to
                waiter.expire()  # it stays watched until its caller unwatches it
        if heap:
            self._arm(loop, heap[0][0])

    def stop_waiters(self) -> None:
        """Refuse new waits and fail the current ones with RuntimeStopped (the owner stops). Idempotent."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            waiter.fail(RuntimeStopped(f"{self.name} stopped while this call was pending"))

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The tasks still running."""
        return frozenset(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Refuse new tasks, cancel every running one and wait until all have ended. Idempotent."""
        self.stop_waiters()
        current = asyncio.current_task()
        while True:
            pending = [t for t in self._tasks if t is not current]
            if not pending:
                return
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


class Guard:
    """A waiter for a task that waits inside ``with supervisor.guard():`` (a plain context manager:
    it never waits itself). At the owner's stop the task is cancelled, and the guard turns that
    cancellation into RuntimeStopped when it leaves. Tasks the supervisor owns are cancelled by it
    anyway and are not tracked."""

    __slots__ = ("_sup", "_task")

    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> Guard:
        sup = self._sup
        task = asyncio.current_task()
        if task is not None and task not in sup._tasks:
            sup.watch(self)
            self._task = task
        elif sup._closed:
            raise RuntimeStopped(f"{sup.name} is stopped")
        return self

    def fail(self, error: BaseException) -> None:
        task, stopped = self._task, self._sup._stopped
        if task is not None and task not in stopped and not task.done() and task is not asyncio.current_task():
            stopped.add(task)  # nested guards of one task: one cancel, turned back by the first to leave
            task.cancel()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        task = self._task
        if task is None:
            return
        sup = self._sup
        sup._waiters.pop(self, None)
        if task in sup._stopped:
            sup._stopped.discard(task)
            # Our cancel is taken back; if someone else cancelled the task too, it stays cancelled.
            if task.uncancel() == 0 and exc_type is asyncio.CancelledError:
                raise RuntimeStopped(f"{sup.name} stopped while this call was pending") from None
