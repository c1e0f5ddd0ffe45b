"""The runtime's MCP servers (``rt.mcp``): add, remove, reconnect, load a configuration."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from loom.errors import ToolError, UsageError
from loom.tools.mcp.client import McpConnection
from loom.tools.mcp.config import McpServerConfig, parse_mcp_config, servers_from_env

if TYPE_CHECKING:
    from loom.tools.registry import ToolRegistry

__all__ = ["McpManager"]

log = logging.getLogger("loom.tools.mcp")


class McpManager:
    """Owns one :class:`McpConnection` per configured server; a component of :class:`loom.Loom`
    (``rt.mcp``), started after the tool registry and closed before it.

    Args:
        tools: where the servers' tools are registered.
        spawn: starts the runtime-owned tasks that hold the connections.
        config: servers to connect at :meth:`start` (parsed ``mcpServers``); ``None`` reads
            ``$LOOM_MCP_SERVERS`` then.
    """

    name = "mcp"

    def __init__(self, tools: ToolRegistry, spawn: Any, config: Iterable[McpServerConfig] | None = None) -> None:
        self._tools = tools
        self._spawn = spawn
        self._config = list(config) if config is not None else None
        self.connections: dict[str, McpConnection] = {}

    async def start(self) -> None:
        """Connect the configured servers (a server that fails is logged and skipped)."""
        if self._config is not None:
            await self.load(self._config)
        else:
            await self.load_from_env()

    @property
    def configured(self) -> bool:
        """Whether :meth:`start` has any server to connect."""
        import os

        return bool(self._config) or (self._config is None and bool(os.environ.get("LOOM_MCP_SERVERS", "").strip()))

    async def add(self, name: str | None = None, *, config: McpServerConfig | None = None, **spec: Any) -> list[str]:
        """Connect a server and register its tools as ``<name>:<tool>``; returns the tool names.

        Either ``config=`` or ``name`` plus the fields of an ``mcpServers`` entry (``command``,
        ``args``, ``env``, ``cwd``, ``url``, ``type``, ``timeout``). Adding a connected server again
        is a no-op.

        Raises:
            UsageError: invalid configuration. ToolError: ``PROVIDER_UNAVAILABLE`` (cannot connect).
        """
        if config is None:
            if name is None:
                raise UsageError("rt.mcp.add needs a name (or config=)")
            if "transport" in spec and "type" not in spec:
                spec["type"] = spec.pop("transport")
            config = parse_mcp_config({name: spec})[0]
        existing = self.connections.get(config.name)
        if existing is not None:
            if existing.status == "connected" and existing.config == config:
                return existing.tools
            await self.remove(config.name)
        conn = McpConnection(config, self._tools, self._spawn)
        self.connections[config.name] = conn
        return await conn.connect()

    async def remove(self, name: str) -> bool:
        """Disconnect a server and unregister its tools. Returns whether it was known."""
        conn = self.connections.pop(name, None)
        if conn is None:
            return False
        await conn.close()
        self._tools.unregister_owner(f"mcp:{name}")
        return True

    async def reconnect(self, name: str) -> list[str]:
        """Reconnect a server that went down (its tools are re-listed).

        Raises:
            UsageError: unknown server. ToolError: ``PROVIDER_UNAVAILABLE``.
        """
        conn = self.connections.get(name)
        if conn is None:
            raise UsageError(f"no MCP server named {name!r} (known: {sorted(self.connections)})")
        return await conn.reconnect()

    async def load(self, configs: Iterable[McpServerConfig]) -> dict[str, str]:
        """Connect several servers; a failure is logged and skipped. Returns {name: error} for failures."""
        failed = {}
        for config in configs:
            try:
                await self.add(config=config)
            except ToolError as exc:
                failed[config.name] = exc.message
                log.warning("MCP server %s not loaded: %s", config.name, exc.message)
        return failed

    async def load_from_env(self, var: str = "LOOM_MCP_SERVERS") -> dict[str, str]:
        """Load ``$LOOM_MCP_SERVERS`` (an ``mcpServers`` JSON object, or upstream's array form)."""
        try:
            configs = servers_from_env(var)
        except UsageError as exc:
            log.warning("%s ignored: %s", var, exc)
            return {var: str(exc)}
        return await self.load(configs)

    def describe(self) -> list[dict[str, Any]]:
        return [c.describe() for c in self.connections.values()]

    async def aclose(self) -> None:
        """Disconnect every server (their processes stopped)."""
        for conn in list(self.connections.values()):
            await conn.close()
