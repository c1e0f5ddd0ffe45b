"""Connections to MCP servers, with the official ``mcp`` SDK (``mcp.Client``).

An ``mcp.Client`` is an anyio context manager: it must be entered and left in the same task.
So each connection has an owner task (started by the runtime's supervisor) that holds the
client open until the connection is closed; calls come from any task. The server's tools are
registered as ``<server>:<tool>``. A ``tools/list_changed`` notification re-lists them. A call
that fails because the connection broke (server crashed, unreachable) gives
``PROVIDER_UNAVAILABLE`` and marks the connection down; ``reconnect()`` brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Literal

from loom.errors import ToolError
from loom.tools.mcp.config import McpServerConfig
from loom.tools.result import ErrorCode

if TYPE_CHECKING:
    from loom.tools.registry import ToolRegistry

__all__ = ["McpConnection", "McpTool"]

log = logging.getLogger("loom.tools.mcp")
Status = Literal["idle", "connecting", "connected", "down", "closed"]


class McpTool:
    """One tool of an MCP server, as a :class:`loom.Tool` named ``<server>:<tool>``."""

    provider = "mcp"

    def __init__(self, conn: McpConnection, remote: Any) -> None:
        self.conn = conn
        self.remote_name: str = remote.name
        self.name = f"{conn.config.name}:{remote.name}"
        self.description = remote.description or ""
        self.schema = dict(remote.input_schema or {"type": "object"})
        # MCP's hint that a tool may destroy or overwrite things: a cognitive loop asks before calling it
        self.dangerous = getattr(getattr(remote, "annotations", None), "destructive_hint", None) is True

    async def execute(self, args: dict[str, Any]) -> Any:
        return await self.conn.call(self.remote_name, args)


def _flatten(result: Any) -> dict[str, Any]:
    texts = []
    for block in result.content or []:
        text = getattr(block, "text", None)
        if text is not None:
            texts.append(text)
        elif getattr(block, "type", "") == "resource":
            res = getattr(block, "resource", None)
            texts.append(getattr(res, "text", None) or f"[resource: {getattr(res, 'uri', '?')}]")
        else:
            texts.append(f"[{getattr(block, 'type', 'content')} content]")
    out: dict[str, Any] = {"text": "\n".join(texts)}
    if result.structured_content is not None:
        out["structured"] = result.structured_content
    return out


def _is_broken(exc: BaseException) -> bool:
    """Does this exception mean the connection itself is gone (not just this call)?"""
    import anyio

    if isinstance(exc, BaseExceptionGroup):
        return any(_is_broken(e) for e in exc.exceptions)
    if isinstance(exc, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream | EOFError | OSError):
        return True
    text = str(exc).lower()
    return any(w in text for w in ("connection closed", "closed", "broken pipe", "terminated", "not connected"))


class McpConnection:
    """A live connection to one MCP server, held open by a task of the runtime.

    Args:
        config: the server.
        tools: where its tools are registered (as ``<server>:<tool>``).
        spawn: starts the runtime-owned task that holds the connection (``Supervisor.spawn``).
    """

    def __init__(self, config: McpServerConfig, tools: ToolRegistry, spawn: Any) -> None:
        self.config = config
        self._tools = tools
        self._spawn = spawn
        self.status: Status = "idle"
        self.last_error = ""
        self.server_info = ""
        self.protocol_version = ""
        self.tools: list[str] = []
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stderr: Any = None

    # -- lifecycle -----------------------------------------------------------------------
    async def connect(self) -> list[str]:
        """Connect, list and register the tools; returns their names.

        Raises:
            ToolError: ``PROVIDER_UNAVAILABLE`` when the server cannot be started or reached,
                or does not complete the handshake within the configured timeout.
        """
        if self.status == "connected":
            return self.tools
        self.status = "connecting"
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = self._spawn(self._own(ready), name=f"loom.tools.mcp:{self.config.name}")
        try:
            async with asyncio.timeout(self.config.timeout):
                await asyncio.shield(ready)
        except TimeoutError:
            await self.close()
            self.status = "down"
            self.last_error = f"no handshake within {self.config.timeout:g}s"
            raise ToolError(ErrorCode.PROVIDER_UNAVAILABLE, self.config.name, self.last_error) from None
        except ToolError:
            await self._join()
            raise
        return self.tools

    async def _own(self, ready: asyncio.Future[None]) -> None:
        from mcp import Client

        try:
            async with (
                contextlib.AsyncExitStack() as resources,
                Client(
                    await self._target(resources),
                    mode=self.config.mode,
                    read_timeout_seconds=self.config.timeout,
                    message_handler=self._on_message,
                ) as client,
            ):
                self._client = client
                info = client.server_info
                self.server_info = f"{info.name} {info.version}" if info else ""
                self.protocol_version = str(client.protocol_version or "")
                await self._register_tools()
                assert self._stop is not None
                listening = asyncio.Event()
                async with asyncio.TaskGroup() as group:  # the listener lives exactly as long as the connection
                    watcher = group.create_task(
                        self._watch(client, listening), name=f"loom.tools.mcp.watch:{self.config.name}"
                    )
                    # Ready only once change events are subscribed: there is no replay of missed ones.
                    await listening.wait()
                    self.status = "connected"
                    ready.set_result(None)
                    await self._stop.wait()
                    watcher.cancel()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the SDK raises groups; record, report, end
            self.last_error = _describe(exc) + self.stderr_tail()
            log.warning("MCP server %s: %s", self.config.name, self.last_error)
            if not ready.done():
                ready.set_exception(ToolError(ErrorCode.PROVIDER_UNAVAILABLE, self.config.name, self.last_error))
        finally:
            self._client = None
            if self.status != "closed":
                self.status = "down"

    async def _target(self, resources: contextlib.AsyncExitStack) -> Any:
        """What mcp.Client connects through (an HTTP client with the configured headers goes
        into ``resources``, closed after the connection)."""
        from mcp import StdioServerParameters

        c = self.config
        if c.transport == "stdio":
            import os
            import tempfile

            from mcp.client.stdio import stdio_client

            env = {**os.environ, **c.env} if c.env else None
            params = StdioServerParameters(command=c.command, args=list(c.args), env=env, cwd=c.cwd)
            # The server's stderr goes to a file of ours (not to the kernel's stderr, and never left
            # to fill a pipe); its tail is quoted when the server fails.
            if self._stderr is None:
                self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            return stdio_client(params, errlog=self._stderr)
        if c.transport == "sse":
            from mcp.client.sse import sse_client

            return sse_client(c.url, headers=c.headers or None)
        if not c.headers:
            return c.url  # streamable HTTP
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        http = await resources.enter_async_context(create_mcp_http_client(headers=c.headers))
        return streamable_http_client(c.url, http_client=http)

    async def _register_tools(self) -> None:
        client = self._client
        listed, cursor = [], None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        owner = f"mcp:{self.config.name}"
        self._tools.unregister_owner(owner)
        self.tools = []
        for remote in listed:
            tool = McpTool(self, remote)
            self._tools.register(tool, provider="mcp", owner=owner)
            self.tools.append(tool.name)

    async def _watch(self, client: Any, listening: asyncio.Event) -> None:
        """Re-list the tools when the server says they changed (2026-07-28: a listen stream;
        older protocols send ``notifications/tools/list_changed``, seen by ``_on_message``).
        ``listening`` is set once events can no longer be missed (or there is no stream)."""
        from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost

        try:
            async with client.listen(tools_list_changed=True) as sub:
                listening.set()
                async for _event in sub:
                    await self._refresh()
        except (ListenNotSupportedError, SubscriptionLost):
            return
        except Exception as exc:  # noqa: BLE001 - a server without subscriptions still serves calls
            log.info("MCP server %s: no change stream (%s)", self.config.name, _describe(exc))
        finally:
            listening.set()

    async def _on_message(self, message: Any) -> None:
        import mcp_types as types

        root = getattr(message, "root", message)
        if isinstance(root, types.ToolListChangedNotification) and self.status == "connected":
            self._spawn(self._refresh(), name=f"loom.tools.mcp.refresh:{self.config.name}")

    async def _refresh(self) -> None:
        try:
            await self._register_tools()
        except Exception as exc:  # noqa: BLE001 - a failed refresh leaves the old tools and is logged
            log.warning("MCP server %s: refreshing tools failed: %s", self.config.name, _describe(exc))

    async def close(self) -> None:
        """Disconnect (the server process is stopped). Its tools stay registered and answer
        ``PROVIDER_UNAVAILABLE`` until :meth:`reconnect`. Idempotent."""
        self.status = "closed"
        await self._join()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    async def _join(self) -> None:
        if self._stop is not None:
            self._stop.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def reconnect(self) -> list[str]:
        """Close (if needed) and connect again."""
        await self.close()
        self.status = "idle"
        return await self.connect()

    # -- calls ---------------------------------------------------------------------------
    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        """Call a tool of this server. ``isError`` results raise ``TOOL_ERROR``; a broken
        connection raises ``PROVIDER_UNAVAILABLE`` (and marks the connection down)."""
        client = self._client
        if client is None or self.status != "connected":
            why = self.last_error or self.status
            raise ToolError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"{self.config.name}:{tool}",
                f"MCP server {self.config.name!r} is {self.status} ({why}); reconnect it",
            )
        try:
            result = await client.call_tool(tool, args)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - classified below
            if _is_broken(exc):
                self.last_error = _describe(exc)
                self.status = "down"
                if self._stop is not None:
                    self._stop.set()
                raise ToolError(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    f"{self.config.name}:{tool}",
                    f"MCP server {self.config.name!r} went away: {self.last_error}",
                ) from None
            raise ToolError(ErrorCode.CAPABILITY_ERROR, f"{self.config.name}:{tool}", _describe(exc)) from None
        out = _flatten(result)
        if result.is_error:
            raise ToolError(
                ErrorCode.TOOL_ERROR, f"{self.config.name}:{tool}", out["text"] or "the tool reported an error"
            )
        return out

    def stderr_tail(self, limit: int = 400) -> str:
        """The end of what a stdio server wrote to stderr ("" when nothing)."""
        f = self._stderr
        if f is None:
            return ""
        try:
            f.flush()
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            tail = f.read().strip()
        except (OSError, ValueError):
            return ""
        return f" (server stderr: ...{tail[-limit:]})" if tail else ""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "transport": self.config.transport,
            "status": self.status,
            "server": self.server_info,
            "protocol": self.protocol_version,
            "tools": list(self.tools),
            "last_error": self.last_error,
        }

    def __repr__(self) -> str:
        return f"<McpConnection {self.config.name} {self.status} tools={len(self.tools)}>"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
