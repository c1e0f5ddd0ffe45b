"""The Tool protocol and the ``@tool`` decorator.

A tool has a name, a description, a JSON Schema for its arguments and an async ``execute``.
Functions become tools through ``@tool`` (the same machinery as ``@capability``: the schema comes
from the signature, pydantic validates and coerces the arguments).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

from loom.sdk.capability import capability

__all__ = ["Tool", "tool"]

F = TypeVar("F", bound=Callable[..., Any])


@runtime_checkable
class Tool(Protocol):
    """Anything the :class:`~loom.tools.ToolRegistry` can invoke.

    Optional attributes the registry honours: ``provider`` (``native``, ``local``, ``mcp``,
    ``remote``), ``version``, ``max_concurrency`` (calls at once) and ``validate(args) -> args``
    (used instead of the generic JSON Schema check, e.g. to coerce types). ``dangerous = True``
    makes a cognitive loop ask for approval first.
    """

    name: str
    description: str
    schema: Mapping[str, Any]

    async def execute(self, args: dict[str, Any]) -> Any: ...


def tool(
    name: str,
    *,
    description: str | None = None,
    version: str = "1.0",
    max_concurrency: int | None = None,
    dangerous: bool = False,
) -> Callable[[F], F]:
    """Declare a function as tool ``name`` (schema from its type hints; the function stays callable).

    ``rt.tools.register(fn)`` then makes it invocable. ``dangerous=True``: a cognitive loop asks for
    approval before calling it. Raises ``UsageError`` at decoration time for signatures a schema
    cannot describe.
    """
    deco = capability(name, version=version, description=description)

    def decorate(func: F) -> F:
        func = deco(func)
        options: dict[str, Any] = {}
        if max_concurrency is not None:
            options["max_concurrency"] = max_concurrency
        if dangerous:
            options["dangerous"] = True
        if options:
            func.__loom_capability__ = func.__loom_capability__.with_options(**options)  # type: ignore[attr-defined]
        return func

    return decorate
