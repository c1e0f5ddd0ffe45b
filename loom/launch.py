"""run: a main coroutine with a started :class:`~loom.runtime.Loom`, from a script or a kernel."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from loom.errors import UsageError
from loom.runtime import Loom

__all__ = ["run"]

log = logging.getLogger("loom")
T = TypeVar("T")
_detached: set[asyncio.Task[Any]] = set()  # tasks made by run() inside a running loop


def _report(task: asyncio.Task[Any]) -> None:
    _detached.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("loom.run task failed", exc_info=task.exception())
        print(f"[loom] {task.get_name()} failed: {task.exception()!r}", file=sys.stderr)


def run(main: Callable[[Loom], Awaitable[T]], /, *, nest: bool = False, **loom_options: Any) -> T | asyncio.Task[T]:
    """Run ``await main(rt)`` with a started :class:`Loom` and stop it afterwards.

    In a script (no running loop) this blocks with ``asyncio.run`` and returns main's result.
    Inside a running loop (a Jupyter kernel) it never blocks: it schedules the work on that
    loop and returns the task (``await loom.run(main)`` in a cell to wait for it).

    Args:
        main: ``async def main(rt): ...``.
        nest: opt-in only: in a running loop, block the cell until done using ``nest_asyncio2``
            (process-wide monkeypatch, slower tasks, comms delayed; see docs/architecture.md).
        **loom_options: passed to :class:`Loom`.

    Raises:
        UsageError: ``main`` is not callable; ``nest=True`` without ``nest_asyncio2`` installed.
    """
    if not callable(main):
        raise UsageError(f"loom.run() needs an async function main(rt), got {main!r}")

    async def _main() -> T:
        async with Loom(**loom_options) as rt:
            return await main(rt)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop is running (a script): the only case asyncio.run is used
        return asyncio.run(_main())
    if nest:  # the user asked to block a running loop (nest=True): opt-in only
        try:
            import nest_asyncio2
        except ImportError:
            raise UsageError("loom.run(nest=True) needs the 'nest' extra: pip install 'loom-notebook[nest]'") from None
        nest_asyncio2.apply(loop)
        return loop.run_until_complete(_main())
    return _detach(_main(), "loom.run")


def _detach(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """A task that outlives the runtime that made it (``run`` in a kernel, a magic's ``stop``):
    kept referenced until done, and reported if it fails."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _detached.add(task)
    task.add_done_callback(_report)
    return task
