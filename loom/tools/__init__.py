"""Tools: the ToolRegistry (the seed's ActionBroker), coded results, native tools, MCP."""

from loom.tools.registry import ToolRegistry, ToolStats, openai_name
from loom.tools.result import ErrorCode, ToolErrorInfo, ToolResult, ToolStatus
from loom.tools.tool import Tool, tool

__all__ = [
    "ErrorCode",
    "Tool",
    "ToolErrorInfo",
    "ToolRegistry",
    "ToolResult",
    "ToolStats",
    "ToolStatus",
    "openai_name",
    "tool",
]
