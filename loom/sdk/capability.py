"""``@capability``: a function an agent offers to others, with a JSON Schema from its signature."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loom.errors import ToolError, UsageError

__all__ = ["Capability", "capability", "get_capability"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True, kw_only=True)
class Capability:
    """A named, versioned callable with a pydantic input model (``schema`` is its JSON Schema)."""

    name: str
    version: str
    func: Callable[..., Any]
    description: str = ""
    input_model: Any = None
    schema: dict[str, Any] = field(default_factory=dict)
    max_concurrency: int | None = None
    dangerous: bool = False
    """It changes the world outside the runtime: a cognitive loop asks for approval before calling it."""

    def with_options(self, **changes: Any) -> Capability:
        """A copy with ``changes`` (e.g. ``max_concurrency``)."""
        return dataclasses.replace(self, **changes)

    async def execute(self, args: dict[str, Any]) -> Any:
        """Call the function with already-validated arguments (the :class:`loom.Tool` protocol).

        A sync function runs inline on the loop: keep it quick, or make it async.
        """
        result = self.func(**args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def validate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments checked and coerced by the input model.

        Raises:
            ToolError: code ``INVALID_PARAMS`` with pydantic's explanation.
        """
        import pydantic

        if not isinstance(args, Mapping):
            raise ToolError("INVALID_PARAMS", self.name, f"arguments must be an object, got {type(args).__name__}")
        try:
            model = self.input_model.model_validate(dict(args))
        except pydantic.ValidationError as exc:
            errors = {".".join(map(str, e["loc"])) or "(root)": e["msg"] for e in exc.errors()}
            raise ToolError(
                "INVALID_PARAMS", self.name, "; ".join(f"{k}: {v}" for k, v in errors.items()), errors
            ) from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    async def invoke(self, args: Mapping[str, Any]) -> Any:
        """Validate and call (awaited if async; a sync function runs inline).

        Raises:
            ToolError: ``INVALID_PARAMS``, or ``CAPABILITY_ERROR`` when the function raised.
        """
        kwargs = self.validate(args)
        try:
            return await self.execute(kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise ToolError("CAPABILITY_ERROR", self.name, f"{exc.__class__.__name__}: {exc}") from exc


def capability(name: str, *, version: str = "1.0", description: str | None = None) -> Callable[[F], F]:
    """Declare ``func`` as capability ``name``; the function itself stays callable as before.

    The JSON Schema comes from the signature (pydantic); unannotated parameters accept anything.

    Raises:
        UsageError: at decoration time, for a bad name/version or a signature with ``*args``/``**kwargs``.
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise UsageError(f"capability name must be a non-empty str without spaces, got {name!r}")
    if not isinstance(version, str) or not version:
        raise UsageError(f"capability version must be a non-empty str, got {version!r}")

    def decorate(func: F) -> F:
        import pydantic

        if not callable(func):
            raise UsageError(f"@capability({name!r}) must decorate a function, got {func!r}")
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(func).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise UsageError(
                    f"@capability({name!r}) on {func.__qualname__}: *args/**kwargs cannot be described by a schema"
                )
            annotation = Any if param.annotation is param.empty else param.annotation
            default = ... if param.default is param.empty else param.default
            fields[pname] = (annotation, default)
        model_name = "".join(p.capitalize() for p in name.replace("-", ".").split(".")) + "Args"
        try:
            model = pydantic.create_model(model_name, **fields)
            schema = model.model_json_schema()
        except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
            raise UsageError(f"@capability({name!r}) on {func.__qualname__}: cannot build a schema: {exc}") from exc
        doc = inspect.getdoc(func) or ""
        func.__loom_capability__ = Capability(  # type: ignore[attr-defined]
            name=name,
            version=version,
            func=func,
            description=description if description is not None else doc.split("\n\n")[0],
            input_model=model,
            schema=schema,
        )
        return func

    return decorate


def get_capability(obj: Any) -> Capability:
    """The :class:`Capability` behind a decorated function (or the Capability itself).

    Raises:
        UsageError: ``obj`` was not decorated with ``@capability``.
    """
    if isinstance(obj, Capability):
        return obj
    cap = getattr(obj, "__loom_capability__", None)
    if not isinstance(cap, Capability):
        raise UsageError(f"{obj!r} is not a capability: decorate it with @loom.capability(name)")
    return cap
