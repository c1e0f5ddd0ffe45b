"""Idempotent calls: a call repeated with the same id gets the first call's result.

A bounded memory of finished results (the most recent 1024) and the calls still in flight, so a
repeat that arrives while the first is running waits for it instead of running the work twice.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["CallOnce"]

R = TypeVar("R")


class CallOnce(Generic[R]):
    """Runs the work of each call id once."""

    def __init__(self, remember: int = 1024) -> None:
        self._remember = remember
        self._results: OrderedDict[str, R] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[R]] = {}

    async def run(self, call_id: str, work: Callable[[], Awaitable[R]]) -> R:
        """``await work()`` unless ``call_id`` ran (or runs) already: then that result."""
        done = self._results.get(call_id)
        if done is not None:
            return done
        pending = self._inflight.get(call_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._inflight[call_id] = fut
        try:
            result = await work()
            fut.set_result(result)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            del self._inflight[call_id]
        self._results[call_id] = result
        if len(self._results) > self._remember:
            self._results.popitem(last=False)
        return result
