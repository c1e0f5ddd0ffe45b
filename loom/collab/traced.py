"""A span around each collaboration primitive (when telemetry is on; a plain call otherwise).

The span is current while the primitive runs, so its requests (``publish`` spans) and the
handlers that answer them belong to it: one request/reply, fan-out, barrier or contract-net
round is one subtree of the trace. Its attributes say how it ended.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from loom.telemetry.seam import Instruments

__all__ = ["traced"]

T = TypeVar("T")
Attrs = Callable[..., dict[str, Any]]


def traced(name: str, attrs: Attrs) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorate ``async def primitive(collab, ...)`` (a Collaborator method or a function taking
    one): ``attrs(collab, *args, **kwargs)`` gives the span's attributes from the call."""

    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        def call(collab: Any, *args: Any, **kwargs: Any) -> Awaitable[T]:
            inst: Instruments = collab.link.instruments
            if inst.tracer is None:
                return fn(collab, *args, **kwargs)  # the coroutine itself: no frame of ours when off
            span_attrs = {"loom.agent": collab.sender, "loom.component": "collab", **attrs(collab, *args, **kwargs)}
            return _run(inst, name, span_attrs, fn(collab, *args, **kwargs))

        return call

    return wrap


async def _run(inst: Instruments, name: str, attrs: dict[str, Any], work: Awaitable[T]) -> T:
    with inst.span(name, attrs) as span:
        result = await work
        for key, value in _outcome(result).items():
            span.set(key, value)
        return result


def _outcome(result: Any) -> dict[str, Any]:
    if result is None:
        return {"loom.collab.outcome": "timeout"}
    for flag in ("satisfied", "ok"):  # FanoutResult, BarrierResult
        if isinstance(getattr(result, flag, None), bool):
            out: dict[str, Any] = {"loom.collab.outcome": "ok" if getattr(result, flag) else "unsatisfied"}
            for key in ("replies", "arrived", "awards", "proposals"):
                value = getattr(result, key, None)
                if isinstance(value, list | tuple):
                    out[f"loom.collab.{key}"] = len(value)
            return out
    return {"loom.collab.outcome": "ok"}
