"""MCP server mode: the runtime's tools, and a ``publish`` tool for the bus, to any MCP client.

Built on ``mcp.server.mcpserver.MCPServer``. MCPServer describes a tool by a Python signature,
so each registry tool gets a wrapper whose signature is derived from its JSON Schema (types,
required, defaults); the full schema is still enforced by ``rt.tools.invoke``, whose coded
errors come back to the client as tool errors (``isError``).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from loom.errors import LoomError
from loom.events.event import Event

if TYPE_CHECKING:
    from loom.runtime import Loom

__all__ = ["build_mcp_server", "mcp_tool_name", "serve"]

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


def build_mcp_server(rt: Loom, *, name: str = "loom") -> Any:
    """An MCPServer exposing every tool of ``rt.tools`` (as of now) and ``publish``."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError as McpToolError

    server = MCPServer(name=name, instructions="Tools of a Loom runtime, and `publish` to put an event on its bus.")

    for tool_name in rt.tools.names():
        desc = rt.tools.describe(tool_name)

        def make(target: str) -> Any:
            async def call(**kwargs: Any) -> Any:
                args = {k: v for k, v in kwargs.items() if v is not None}
                result = await rt.tools.invoke(target, args, caller="mcp")
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
            delivered = await rt.bus.publish(topic, event, timeout=5.0)
        except (LoomError, ValueError, TypeError) as exc:
            raise McpToolError(f"INVALID_PARAMS: {exc}") from None
        return {"topic": topic, "delivered": delivered, "event_id": event.id}

    server.add_tool(publish, name="publish", description="Publish an event on the Loom bus.")
    return server


async def serve(transport: str = "stdio", *, host: str = "127.0.0.1", port: int = 8766, **loom_options: Any) -> None:
    """Run a Loom runtime and serve its tools over MCP until cancelled (``loom mcp serve``)."""
    from loom.runtime import Loom

    async with Loom(name="mcp", **loom_options) as rt:
        server = build_mcp_server(rt)
        if transport == "stdio":
            await server.run_stdio_async()
        elif transport == "http":
            await server.run_streamable_http_async(host=host, port=port)
        elif transport == "sse":
            await server.run_sse_async(host=host, port=port)
        else:
            raise LoomError(f"unknown MCP transport {transport!r}: stdio, http or sse")
