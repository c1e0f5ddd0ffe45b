"""The one place where Loom starts background tasks.

Every task has an owner (a :class:`Supervisor`, owned by a :class:`loom.Loom`) and a name
(``loom.<component>.<purpose>[:<id>]``). A failing task is logged, never silently lost; closing
the supervisor cancels and awaits everything it started.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from loom.errors import RuntimeStopped

__all__ = ["Supervisor"]

log = logging.getLogger("loom")
T = TypeVar("T")


class Supervisor:
    """Owns a set of named tasks on the running loop."""

    __slots__ = ("_closed", "_tasks", "name")

    def __init__(self, name: str = "loom") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

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

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The tasks still running."""
        return frozenset(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Refuse new tasks, cancel every running one and wait until all have ended. Idempotent."""
        self._closed = True
        current = asyncio.current_task()
        while True:
            pending = [t for t in self._tasks if t is not current]
            if not pending:
                return
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
