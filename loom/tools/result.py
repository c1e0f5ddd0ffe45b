"""What a tool invocation returns: a status, the output or a coded error."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loom.errors import ToolError

__all__ = ["ErrorCode", "ToolErrorInfo", "ToolResult", "ToolStatus"]


class ToolStatus(StrEnum):
    """Outcome of an invocation (names as upstream's ``ActionStatus``)."""

    OK = "ACTION_OK"
    ERROR = "ACTION_ERROR"
    TIMEOUT = "ACTION_TIMEOUT"


class ErrorCode(StrEnum):
    """Why an invocation did not succeed (``ToolResult.error.code``)."""

    NOT_FOUND = "NOT_FOUND"
    """No tool by that name."""
    INVALID_PARAMS = "INVALID_PARAMS"
    """The arguments do not match the tool's schema (checked before the call)."""
    CAPABILITY_ERROR = "CAPABILITY_ERROR"
    """The tool ran and raised."""
    PERMISSION_DENIED = "PERMISSION_DENIED"
    """A sandbox rule refused the call (path outside the workspace, command not allowed)."""
    ACTION_TIMEOUT = "ACTION_TIMEOUT"
    """No result within the timeout; the work was cancelled."""
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    """The provider is gone: an MCP server down, a remote agent disconnected."""
    TOOL_ERROR = "TOOL_ERROR"
    """The tool reported a failure itself (an MCP result with ``isError``)."""
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    """An HTTP service the tool relies on failed (5xx, bad JSON, unreachable)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolErrorInfo:
    code: str
    message: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """``status`` ACTION_OK with ``output``, or ACTION_ERROR/ACTION_TIMEOUT with ``error``."""

    id: str
    tool: str
    status: ToolStatus
    output: Any = None
    error: ToolErrorInfo | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is ToolStatus.OK

    def unwrap(self) -> Any:
        """The output, or raise :class:`loom.ToolError` with the result's code."""
        if self.ok:
            return self.output
        assert self.error is not None
        raise ToolError(self.error.code, self.tool, self.error.message, dict(self.error.details))

    @classmethod
    def failure(
        cls,
        call_id: str,
        tool: str,
        code: str,
        message: str,
        details: dict[str, str] | None = None,
        duration_ms: float = 0.0,
    ) -> ToolResult:
        status = ToolStatus.TIMEOUT if code == ErrorCode.ACTION_TIMEOUT else ToolStatus.ERROR
        info = ToolErrorInfo(code=str(code), message=message, details=details or {})
        return cls(id=call_id, tool=tool, status=status, error=info, duration_ms=duration_ms)
