"""MCP: a client for real MCP servers (stdio, streamable HTTP, SSE) and a server mode."""

from loom.tools.mcp.client import McpConnection, McpTool
from loom.tools.mcp.config import McpServerConfig, parse_mcp_config, servers_from_env
from loom.tools.mcp.manager import McpManager

__all__ = ["McpConnection", "McpManager", "McpServerConfig", "McpTool", "parse_mcp_config", "servers_from_env"]
