"""MCP server configuration: the de-facto ``mcpServers`` JSON format, and ``LOOM_MCP_SERVERS``.

Accepted shapes (a JSON text or the parsed value)::

    {"mcpServers": {"time": {"command": "mcp-server-time", "args": [], "env": {}}}}
    {"time": {"command": "mcp-server-time"}, "docs": {"url": "http://127.0.0.1:3001/mcp"}}
    [{"name": "time", "command": "mcp-server-time"}]          # upstream's array form

A server has either ``command`` (+ ``args``, ``env``, ``cwd``: stdio) or ``url`` (+ ``type``:
``http``/``streamable-http`` (default for urls) or ``sse``, and ``headers`` sent with every
request, e.g. ``{"Authorization": "Bearer ${LOOM_MCP_TOKEN}"}``; ``${VAR}`` is expanded from the
environment in ``env`` and ``headers`` values).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from loom.errors import UsageError

__all__ = ["McpServerConfig", "parse_mcp_config", "servers_from_env"]

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, slots=True, kw_only=True)
class McpServerConfig:
    """One MCP server: how to reach it."""

    name: str
    transport: Literal["stdio", "http", "sse"] = "stdio"
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may carry a token: kept out of reprs
    timeout: float = 30.0
    mode: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise UsageError(f"MCP server name must be letters, digits, '-' or '_', got {self.name!r}")
        if self.transport == "stdio" and not self.command:
            raise UsageError(f"MCP server {self.name!r}: a stdio server needs a command")
        if self.transport in ("http", "sse") and not self.url.startswith(("http://", "https://")):
            raise UsageError(
                f"MCP server {self.name!r}: an {self.transport} server needs an http(s) url, got {self.url!r}"
            )
        if self.headers and self.transport == "stdio":
            raise UsageError(f"MCP server {self.name!r}: headers are for http and sse servers, not stdio")
        if not self.timeout > 0:
            raise UsageError(f"MCP server {self.name!r}: timeout must be positive")


def _one(name: str, spec: Any) -> McpServerConfig:
    if not isinstance(spec, dict):
        raise UsageError(f"MCP server {name!r}: expected an object, got {type(spec).__name__}")
    kind = str(spec.get("type") or spec.get("transport") or ("http" if spec.get("url") else "stdio")).lower()
    transport = {
        "stdio": "stdio",
        "http": "http",
        "streamable-http": "http",
        "streamablehttp": "http",
        "sse": "sse",
    }.get(kind)
    if transport is None:
        raise UsageError(f"MCP server {name!r}: unknown type {kind!r} (stdio, http, sse)")
    args = spec.get("args") or []
    env = spec.get("env") or {}
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise UsageError(f"MCP server {name!r}: args must be a list of strings")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise UsageError(f"MCP server {name!r}: env must map strings to strings")
    headers = spec.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise UsageError(f"MCP server {name!r}: headers must map strings to strings")
    return McpServerConfig(
        name=name,
        transport=transport,
        command=str(spec.get("command") or ""),
        args=tuple(args),  # type: ignore[arg-type]
        env={k: os.path.expandvars(v) for k, v in env.items()},
        cwd=spec.get("cwd"),
        url=str(spec.get("url") or ""),
        headers={k: os.path.expandvars(v) for k, v in headers.items()},
        timeout=float(spec.get("timeout", 30.0)),
        mode=str(spec.get("mode", "auto")),
    )


def parse_mcp_config(data: str | dict[str, Any] | list[Any]) -> list[McpServerConfig]:
    """Server configurations from JSON text or a parsed value (shapes in the module docstring).

    Raises:
        UsageError: invalid JSON or an invalid server entry (the message names it).
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise UsageError(f"MCP configuration is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "mcpServers" in data:
        data = data["mcpServers"]
    if isinstance(data, list):
        out = []
        for i, spec in enumerate(data):
            if not isinstance(spec, dict) or "name" not in spec:
                raise UsageError(f"MCP server #{i} of the list needs a 'name'")
            out.append(_one(str(spec["name"]), spec))
        return out
    if isinstance(data, dict):
        return [_one(name, spec) for name, spec in data.items()]
    raise UsageError(f"MCP configuration must be an object or a list, got {type(data).__name__}")


def servers_from_env(var: str = "LOOM_MCP_SERVERS") -> list[McpServerConfig]:
    """The servers configured in ``$LOOM_MCP_SERVERS`` (empty when unset)."""
    raw = os.environ.get(var, "").strip()
    return parse_mcp_config(raw) if raw else []
