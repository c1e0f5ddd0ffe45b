"""MCP server mode: the runtime's tools, and a ``publish`` tool for the bus, to any MCP client.

Built on ``mcp.server.mcpserver.MCPServer``. MCPServer describes a tool by a Python signature,
so each registry tool gets a wrapper whose signature is derived from its JSON Schema (types,
required, defaults); the full schema is still enforced by ``ToolRegistry.invoke``, whose coded
errors come back to the client as tool errors (``isError``). Over HTTP and SSE, :func:`serve`
applies the exposure rules of :mod:`loom.tools.mcp.exposure` (token, Host/Origin, tool set).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from loom.errors import LoomError, UsageError
from loom.events.event import Event

if TYPE_CHECKING:
    from loom.events.bus import EventBus
    from loom.tools.registry import ToolRegistry

__all__ = ["TRANSPORTS", "build_mcp_server", "mcp_tool_name", "serve"]

log = logging.getLogger("loom.mcp")
TRANSPORTS = {"stdio": "", "http": "/mcp", "sse": "/sse"}
"""The transports :func:`serve` speaks, and the path clients connect to."""

_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def mcp_tool_name(name: str) -> str:
    """``time:now`` → ``time__now`` (MCP tool names allow letters, digits, ``_ - .``)."""
    return name.replace(":", "__")


def _signature(schema: dict[str, Any]) -> tuple[inspect.Signature, dict[str, Any]]:
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    params, annotations = [], {}
    for pname, spec in props.items():
        if not pname.isidentifier():
            continue
        jtype = spec.get("type") if isinstance(spec, dict) else None
        ann = _JSON_TYPES.get(jtype, Any) if isinstance(jtype, str) else Any
        if pname not in required:
            ann = ann | None if ann is not Any else Any
        default = (
            inspect.Parameter.empty if pname in required else (spec.get("default") if isinstance(spec, dict) else None)
        )
        params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default))
        annotations[pname] = ann
    return inspect.Signature(params), annotations


def build_mcp_server(tools: ToolRegistry, bus: EventBus, *, name: str = "loom") -> Any:
    """An MCPServer exposing every tool of ``tools`` (as of now), and ``publish`` onto ``bus``."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError as McpToolError

    server = MCPServer(name=name, instructions="Tools of a Loom runtime, and `publish` to put an event on its bus.")

    for tool_name in tools.names():
        desc = tools.describe(tool_name)

        def make(target: str) -> Any:
            async def call(**kwargs: Any) -> Any:
                args = {k: v for k, v in kwargs.items() if v is not None}
                result = await tools.invoke(target, args, caller="mcp")
                if not result.ok:
                    assert result.error is not None
                    raise McpToolError(f"{result.error.code}: {result.error.message}")
                return result.output

            return call

        fn = make(tool_name)
        fn.__signature__, fn.__annotations__ = _signature(desc["schema"])  # type: ignore[attr-defined]
        fn.__name__ = mcp_tool_name(tool_name).replace(".", "_").replace("-", "_")
        server.add_tool(fn, name=mcp_tool_name(tool_name), description=desc["description"] or tool_name)

    async def publish(topic: str, type: str = "message", payload: str = "", json_payload: dict | None = None) -> dict:
        """Publish an event on the Loom bus; returns how many subscribers received it."""
        try:
            event = (
                Event.from_json(type, json_payload, source="mcp")
                if json_payload is not None
                else Event.from_text(type, payload, source="mcp")
            )
            delivered = await bus.publish(topic, event, timeout=5.0)
        except (LoomError, ValueError, TypeError) as exc:
            raise McpToolError(f"INVALID_PARAMS: {exc}") from None
        return {"topic": topic, "delivered": delivered, "event_id": event.id}

    server.add_tool(publish, name="publish", description="Publish an event on the Loom bus.")
    return server


async def serve(
    transport: str = "stdio",
    *,
    host: str = "127.0.0.1",
    port: int = 8766,
    token: str | None = None,
    force: bool = False,
    tools: Iterable[str] | None = None,
    allowed_hosts: Iterable[str] = (),
    on_ready: Callable[[str], None] | None = None,
    **loom_options: Any,
) -> None:
    """Run a Loom runtime and serve its tools over MCP until cancelled (``loom mcp serve``).

    Args:
        transport: ``stdio``, ``http`` (streamable HTTP, at ``/mcp``) or ``sse`` (at ``/sse``).
        host / port: where HTTP and SSE listen (port 0: a free one). Unused by stdio.
        token: HTTP and SSE: every request must carry ``Authorization: Bearer <token>``.
        force: allow a non-loopback ``host`` without a token (refused otherwise).
        tools: the native tools to serve (default: the standard set, without ``shell.exec``
            when HTTP or SSE listen on a non-loopback address).
        allowed_hosts: more ``Host`` values to accept (``NAME`` or ``NAME:PORT``) besides the
            loopback names and ``host``; e.g. the name remote clients use for a ``0.0.0.0`` server.
        on_ready: called with the URL once HTTP or SSE listen.
        loom_options: passed to :class:`loom.Loom` (``workspace``, ``tool_options``, ...).

    Raises:
        UsageError: an unknown transport, a non-loopback host without a token (unless
            ``force``), a malformed token or allowed host, an address that cannot be bound.
    """
    from loom.bridge.local import is_loopback
    from loom.runtime import Loom
    from loom.tools.mcp.exposure import (
        authority,
        check_exposure,
        require_bearer,
        served_native_tools,
        transport_security,
    )
    from loom.tools.mcp.listen import bind, serve_app

    if transport not in TRANSPORTS:
        raise UsageError(f"unknown MCP transport {transport!r}: stdio, http or sse")
    native = served_native_tools(transport, host, tools)
    if transport == "stdio":  # the parent's pipes: no network, nothing else can reach it
        async with Loom(name="mcp", native_tools=native, **loom_options) as rt:
            await build_mcp_server(rt.tools, rt.bus).run_stdio_async()
        return
    token = token or None
    check_exposure(host, token, force)
    sock = bind(host, port)
    try:
        port = sock.getsockname()[1]
        security = transport_security(host, port, allowed_hosts)
        if not is_loopback(host) and not token:
            log.warning("serving MCP on %s:%s without a token (forced): anyone who can reach it may use it", host, port)
        async with Loom(name="mcp", native_tools=native, **loom_options) as rt:
            server = build_mcp_server(rt.tools, rt.bus)
            if transport == "http":
                app = server.streamable_http_app(transport_security=security, host=host)
            else:
                app = server.sse_app(transport_security=security, host=host)
            if token:
                app = require_bearer(app, token)
            if on_ready is not None:
                on_ready(f"http://{authority(host or '0.0.0.0', port)}{TRANSPORTS[transport]}")
            await serve_app(app, sock)
    finally:
        sock.close()
