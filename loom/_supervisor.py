"""The one place where Loom starts background tasks, and where callers wait on them.

Every task has an owner (a :class:`Supervisor`, owned by a :class:`loom.Loom`) and a name
(``loom.<component>.<purpose>[:<id>]``). A failing task is logged, never silently lost; closing
the supervisor cancels and awaits everything it started.

Callers from outside (a notebook cell awaiting a tool or a reply) wait inside a :class:`Guard`:
when the owner stops, :meth:`Supervisor.stop_waiters` cancels each such wait and the guard turns
that cancellation into :class:`~loom.errors.RuntimeStopped`, at once, instead of letting the
caller wait out its timeout or get an unrelated error from a part that was closed under it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from loom.errors import RuntimeStopped

__all__ = ["Guard", "Supervisor"]

log = logging.getLogger("loom")
T = TypeVar("T")


class Supervisor:
    """Owns a set of named tasks on the running loop."""

    __slots__ = ("_closed", "_guarded", "_stopped", "_tasks", "name")

    def __init__(self, name: str = "loom") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._guarded: dict[asyncio.Task[Any], int] = {}  # task -> depth of nested guards
        self._stopped: set[asyncio.Task[Any]] = set()  # guarded tasks that stop_waiters cancelled

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task named ``name`` on the running loop.

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
        task = loop.create_task(coro, name=name)
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
        """``async with supervisor.guard():`` around a wait on something this owner runs."""
        return Guard(self)

    def stop_waiters(self) -> None:
        """Refuse new guarded waits and end the current ones with RuntimeStopped (the owner stops)."""
        self._closed = True
        current = asyncio.current_task()
        for task in list(self._guarded):
            if task is not current and task not in self._tasks and task not in self._stopped and not task.done():
                self._stopped.add(task)  # its guard raises RuntimeStopped for this cancel
                task.cancel()

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
    """A caller's wait on work its supervisor's owner runs. Nested guards in one task count once;
    the outermost turns a cancellation by :meth:`Supervisor.stop_waiters` into RuntimeStopped.
    Tasks the supervisor owns are cancelled by it anyway and are not tracked."""

    __slots__ = ("_sup", "_task")

    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Guard:
        sup = self._sup
        if sup._closed:
            raise RuntimeStopped(f"{sup.name} is stopped")
        task = asyncio.current_task()
        if task is not None and task not in sup._tasks:
            self._task = task
            sup._guarded[task] = sup._guarded.get(task, 0) + 1
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        task = self._task
        if task is None:
            return
        sup = self._sup
        depth = sup._guarded[task] - 1
        if depth:
            sup._guarded[task] = depth
            return
        del sup._guarded[task]
        if task in sup._stopped:
            sup._stopped.discard(task)
            # Our cancel is taken back; if someone else cancelled the task too, it stays cancelled.
            if task.uncancel() == 0 and exc_type is asyncio.CancelledError:
                raise RuntimeStopped(f"{sup.name} stopped while this call was pending") from None
