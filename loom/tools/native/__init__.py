"""Native tools: shell.exec, fs.read / fs.write / fs.list, weather.get, web.search."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from loom.errors import UsageError
from loom.tools.native.fs import FsListTool, FsReadTool, FsWriteTool
from loom.tools.native.sandbox import SandboxLimits
from loom.tools.native.shell import DEFAULT_ALLOWED, ShellTool
from loom.tools.native.web import WeatherTool, WebSearchTool
from loom.tools.native.workspace import Workspace

__all__ = [
    "ALL_NATIVE",
    "DEFAULT_ALLOWED",
    "DEFAULT_NATIVE",
    "FsListTool",
    "FsReadTool",
    "FsWriteTool",
    "SandboxLimits",
    "ShellTool",
    "WeatherTool",
    "WebSearchTool",
    "Workspace",
    "native_tools",
]

DEFAULT_NATIVE = ("shell.exec", "fs.read", "weather.get", "web.search")
"""Registered unless asked otherwise; ``fs.write`` and ``fs.list`` are opt-in."""
ALL_NATIVE = (*DEFAULT_NATIVE, "fs.write", "fs.list")


def native_tools(workspace: Workspace, names: Iterable[str] = DEFAULT_NATIVE, **options: Any) -> list[Any]:
    """The native tools ``names``, confined to ``workspace``.

    Options: ``shell_allowed`` (the allow-list), ``shell_sandbox`` (``"bwrap"``, the default, or
    ``"none"``: argument checks only), ``shell_bwrap`` (the bubblewrap executable),
    ``shell_writable`` (bind the workspace read-write in the sandbox), ``shell_limits`` (a mapping
    of :class:`SandboxLimits` fields), ``weather`` / ``web_search`` (keyword arguments of
    :class:`WeatherTool` / :class:`WebSearchTool`, e.g. base URLs).

    Raises:
        UsageError: an unknown tool name.
    """
    makers = {
        "shell.exec": lambda: ShellTool(
            workspace,
            allowed=options.get("shell_allowed", DEFAULT_ALLOWED),
            sandbox=options.get("shell_sandbox"),
            bwrap=options.get("shell_bwrap"),
            writable=bool(options.get("shell_writable", False)),
            limits=options.get("shell_limits"),
        ),
        "fs.read": lambda: FsReadTool(workspace),
        "fs.write": lambda: FsWriteTool(workspace),
        "fs.list": lambda: FsListTool(workspace),
        "weather.get": lambda: WeatherTool(**options.get("weather", {})),
        "web.search": lambda: WebSearchTool(**options.get("web_search", {})),
    }
    unknown = set(names) - set(makers)
    if unknown:
        raise UsageError(f"unknown native tools {sorted(unknown)}; choose from {list(makers)}")
    return [makers[n]() for n in dict.fromkeys(names)]
