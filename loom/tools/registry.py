"""ToolRegistry: the one place tools are invoked (the seed's ActionBroker).

``invoke`` validates the arguments against the tool's schema before calling, applies the timeout
(30 s by default) and cancels the work when it passes, de-duplicates by ``call_id``, honours a
per-tool concurrency limit, maps every failure to a coded :class:`ToolResult`, and publishes
``tool.call`` / ``tool.result`` events on the bus so inspectors can show each invocation. A call
runs inside the owner's guard: when the runtime stops, the work is cancelled and the caller gets
RuntimeStopped at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loom._supervisor import Guard, Supervisor
from loom.errors import ToolError, UsageError
from loom.events.event import Event, new_event_id
from loom.telemetry.seam import Instruments
from loom.tools.once import CallOnce
from loom.tools.result import ErrorCode, ToolResult, ToolStatus
from loom.tools.tool import Tool

__all__ = ["ToolRegistry", "ToolStats"]

log = logging.getLogger("loom.tools")
DEFAULT_TIMEOUT = 30.0


@dataclass(slots=True)
class ToolStats:
    calls: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    total_ms: float = 0.0


@dataclass(slots=True)
class _Entry:
    tool: Tool
    provider: str
    owner: str
    semaphore: asyncio.Semaphore | None
    stats: ToolStats = field(default_factory=ToolStats)
    validator: Any = None  # a compiled JSON Schema validator, made on first use


def _as_tool(obj: Any) -> Tool:
    from loom.sdk.capability import Capability

    cap = getattr(obj, "__loom_capability__", None)
    if isinstance(cap, Capability):
        return cap
    if isinstance(obj, Tool):
        return obj
    raise UsageError(f"cannot register {obj!r}: decorate a function with @loom.tool(name) or implement loom.Tool")


class ToolRegistry:
    """Named tools from every provider (native, agents' capabilities, MCP servers, remote agents).

    Args:
        instruments: the runtime's :class:`~loom.telemetry.seam.Instruments`: each call is a
            ``tool.invoke`` span and ``tool.call`` / ``tool.result`` notes (for inspectors).
        supervisor: whose stop ends calls in flight with RuntimeStopped (the runtime's; a private
            one for a standalone registry, stopped by :meth:`aclose`).
        default_timeout: seconds a call may take when the caller gives none.
    """

    def __init__(
        self,
        instruments: Instruments | None = None,
        *,
        supervisor: Supervisor | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.instruments = instruments or Instruments()
        self.instruments.observe("loom.tool.calls", self._observe_calls)
        self._owns_supervisor = supervisor is None
        self._supervisor = supervisor or Supervisor("loom.tools")
        self.default_timeout = default_timeout
        self._entries: dict[str, _Entry] = {}
        self._once: CallOnce[ToolResult] = CallOnce()  # idempotency by call_id
        self._listeners: list[Callable[[], None]] = []

    async def aclose(self) -> None:
        """Close the tools' own resources (HTTP clients); a standalone registry also ends calls in flight."""
        self.instruments.forget("loom.tool.calls", self._observe_calls)
        if self._owns_supervisor:
            self._supervisor.stop_waiters()
        for entry in self._entries.values():
            closer = getattr(entry.tool, "aclose", None)
            if closer is not None:
                await closer()

    # -- registration --------------------------------------------------------------------
    def register(self, obj: Any, *, provider: str | None = None, owner: str = "", replace: bool = True) -> Tool:
        """Add a tool (a ``@tool``/``@capability`` function, or a :class:`Tool`). Returns it.

        Raises:
            UsageError: not a tool, a bad name, or the name is taken and ``replace`` is false.
        """
        t = _as_tool(obj)
        name = t.name
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise UsageError(f"tool name must be a non-empty str without spaces, got {name!r}")
        if name in self._entries and not replace:
            raise UsageError(f"a tool named {name!r} is already registered")
        limit = getattr(t, "max_concurrency", None)
        if limit is not None and (limit.__class__ is not int or limit < 1):
            raise UsageError(f"max_concurrency of {name!r} must be an int >= 1, got {limit!r}")
        self._entries[name] = _Entry(
            tool=t,
            provider=provider or getattr(t, "provider", None) or "native",
            owner=owner,
            semaphore=asyncio.Semaphore(limit) if limit else None,
        )
        self._changed()
        return t

    def unregister(self, name: str) -> bool:
        if self._entries.pop(name, None) is None:
            return False
        self._changed()
        return True

    def unregister_owner(self, owner: str) -> list[str]:
        """Remove every tool an owner registered (an agent, an MCP server); returns their names."""
        names = [n for n, e in self._entries.items() if e.owner == owner]
        for n in names:
            del self._entries[n]
        if names:
            self._changed()
        return names

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever tools are added or removed (e.g. to refresh a directory)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # -- lookup --------------------------------------------------------------------------
    def get(self, name: str) -> Tool | None:
        entry = self._entries.get(name)
        return entry.tool if entry else None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self, name: str) -> dict[str, Any]:
        """Name, description, schema, provider, owner and version of one tool."""
        e = self._entries[name]
        return {
            "name": name,
            "description": getattr(e.tool, "description", "") or "",
            "schema": dict(getattr(e.tool, "schema", {}) or {}),
            "provider": e.provider,
            "owner": e.owner,
            "version": getattr(e.tool, "version", "") or "",
        }

    def list_tools(self, format: str = "loom") -> list[dict[str, Any]]:
        """Every tool: ``loom`` descriptions, or ``openai`` function-calling definitions.

        OpenAI function names allow only ``[a-zA-Z0-9_-]``, so ``math.add`` / ``time:now`` are
        given as ``math_add`` / ``time__now``; :meth:`resolve_openai_name` maps them back.
        """
        if format == "loom":
            return [self.describe(n) for n in self.names()]
        if format == "openai":
            return [
                {
                    "type": "function",
                    "function": {
                        "name": openai_name(n),
                        "description": (d := self.describe(n))["description"][:1024],
                        "parameters": d["schema"] or {"type": "object", "properties": {}},
                    },
                }
                for n in self.names()
            ]
        raise UsageError(f"unknown format {format!r}; use 'loom' or 'openai'")

    def resolve_openai_name(self, fn_name: str) -> str | None:
        return next((n for n in self._entries if openai_name(n) == fn_name), None)

    def stats(self) -> dict[str, ToolStats]:
        return {n: e.stats for n, e in self._entries.items()}

    # -- invocation ----------------------------------------------------------------------
    async def invoke(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        timeout: float | None = None,
        call_id: str | None = None,
        caller: str = "",
    ) -> ToolResult:
        """Invoke tool ``name``; never raises for a tool failure: the result carries the code.

        Args:
            args: the arguments (validated against the tool's schema first).
            version: the version the caller expects; a tool offered in another one is ``NOT_FOUND``.
            timeout: seconds (default 30); on expiry the work is cancelled: ``ACTION_TIMEOUT``.
            call_id: idempotency key: a second call with the same id returns the first result.
            caller: who asks (shown on the ``tool.call`` event).

        Raises:
            RuntimeStopped: the runtime stopped before or during the call (the work is cancelled).
            UsageError: a timeout that is not a positive number.
        """
        attrs = {"loom.tool": name, "loom.agent": caller, "loom.component": "tools"}
        with Guard(self._supervisor), self.instruments.span("tool.invoke", attrs) as span:
            if call_id is None:  # nobody can repeat this call: no idempotency bookkeeping needed
                result = await self._invoke(name, args, version, timeout, new_event_id(), caller)
            else:
                result = await self._once.run(
                    call_id, lambda: self._invoke(name, args, version, timeout, call_id, caller)
                )
            if span.recording:
                span.set("loom.tool.call_id", result.id)
                span.set("loom.status", "ok" if result.error is None else result.error.code)
                if result.error is not None:
                    span.fail(f"{result.error.code}: {result.error.message}")
            return result

    async def _invoke(
        self,
        name: str,
        args: Mapping[str, Any] | None,
        version: str | None,
        timeout: float | None,
        call_id: str,
        caller: str,
    ) -> ToolResult:
        start = time.perf_counter()
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self.names()[:20]) or "none"
            return self._finish(
                None,
                ToolResult.failure(call_id, name, ErrorCode.NOT_FOUND, f"no tool named {name!r} (registered: {known})"),
            )
        have = getattr(entry.tool, "version", "") or ""
        if version and have and have != version:
            message = f"{name!r} is offered in version {have!r}, not {version!r}"
            return self._finish(None, ToolResult.failure(call_id, name, ErrorCode.NOT_FOUND, message))
        limit = self.default_timeout if timeout is None else timeout
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
            raise UsageError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if self.instruments.watched("tool.call"):  # events are built only when someone listens
            self._note(
                "tool.call",
                {"id": call_id, "tool": name, "caller": caller, "provider": entry.provider, "args": _preview(args)},
            )
        try:
            kwargs = self._validate(entry, name, args)
        except ToolError as exc:
            return self._finish(entry, ToolResult.failure(call_id, name, exc.code, _message(exc), exc.details))
        try:
            async with asyncio.timeout(limit):
                if entry.semaphore is None:
                    output = await entry.tool.execute(kwargs)
                else:
                    async with entry.semaphore:
                        output = await entry.tool.execute(kwargs)
        except TimeoutError:
            ms = (time.perf_counter() - start) * 1000
            result = ToolResult.failure(call_id, name, ErrorCode.ACTION_TIMEOUT, f"no result within {limit:g}s", {}, ms)
            return self._finish(entry, result)
        except ToolError as exc:
            result = ToolResult.failure(
                call_id, name, exc.code, _message(exc), exc.details, (time.perf_counter() - start) * 1000
            )
            return self._finish(entry, result)
        except Exception as exc:  # noqa: BLE001 - a tool's own failure is reported, not raised
            result = ToolResult.failure(
                call_id,
                name,
                ErrorCode.CAPABILITY_ERROR,
                f"{type(exc).__name__}: {exc}",
                {},
                (time.perf_counter() - start) * 1000,
            )
            return self._finish(entry, result)
        ms = (time.perf_counter() - start) * 1000
        return self._finish(
            entry, ToolResult(id=call_id, tool=name, status=ToolStatus.OK, output=output, duration_ms=ms)
        )

    def _validate(self, entry: _Entry, name: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise ToolError(ErrorCode.INVALID_PARAMS, name, f"arguments must be an object, got {type(args).__name__}")
        own = getattr(entry.tool, "validate", None)
        if callable(own):
            return own(args)
        schema = getattr(entry.tool, "schema", None)
        if schema:
            # fastjsonschema compiles the schema once to plain Python: jsonschema's import alone costs
            # ~1 s here (its format checkers pull in rfc3987_syntax), stalling the loop on first use.
            import fastjsonschema

            if entry.validator is None:
                try:
                    entry.validator = fastjsonschema.compile(dict(schema))
                except fastjsonschema.JsonSchemaDefinitionException as exc:
                    raise ToolError(
                        ErrorCode.INVALID_PARAMS, name, f"the tool's own schema is invalid: {exc}"
                    ) from None
            try:
                entry.validator(dict(args))
            except fastjsonschema.JsonSchemaValueException as exc:
                where = ".".join(str(p) for p in exc.path[1:]) or "(root)"
                message = exc.message.removeprefix("data.").removeprefix("data ")
                raise ToolError(ErrorCode.INVALID_PARAMS, name, f"{where}: {message}", {where: message}) from None
        return dict(args)

    def _finish(self, entry: _Entry | None, result: ToolResult) -> ToolResult:
        if entry is not None:
            st = entry.stats
            st.calls += 1
            st.total_ms += result.duration_ms
            if result.ok:
                st.ok += 1
            else:
                code = result.error.code if result.error else "?"
                st.errors[code] = st.errors.get(code, 0) + 1
        if self.instruments.watched("tool.result"):
            body: dict[str, Any] = {
                "id": result.id,
                "tool": result.tool,
                "status": str(result.status),
                "duration_ms": round(result.duration_ms, 3),
            }
            if result.error is not None:
                body["error"] = {"code": result.error.code, "message": result.error.message}
            self._note("tool.result", body)
        return result

    def _note(self, topic: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body, default=str).encode()
        self.instruments.note(topic, Event(topic, payload, source="loom.tools", metadata={"tool": body["tool"]}))

    def _observe_calls(self) -> list[tuple[float, dict[str, str]]]:
        out: list[tuple[float, dict[str, str]]] = []
        for name, entry in list(self._entries.items()):  # a copy: exporters read from their own thread
            st = entry.stats
            if st.ok:
                out.append((st.ok, {"loom.tool": name, "loom.status": "ok"}))
            out.extend((n, {"loom.tool": name, "loom.status": code}) for code, n in list(st.errors.items()))
        return out


def openai_name(name: str) -> str:
    """A tool name as OpenAI function names allow (``[a-zA-Z0-9_-]``, at most 64 characters)."""
    out = name.replace(":", "__").replace(".", "_")
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in out)[:64]


def _preview(args: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(args, default=str)
    except (TypeError, ValueError):
        text = repr(args)
    return text if len(text) <= limit else text[:limit] + "…"


def _message(exc: ToolError) -> str:
    return exc.message
