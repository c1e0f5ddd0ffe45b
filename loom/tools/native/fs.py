"""``fs.read``, ``fs.write`` and ``fs.list``, confined to the workspace (see :class:`Workspace`).

File I/O runs in a worker thread so a large file never stalls the event loop. The final path
component is opened with ``O_NOFOLLOW``: a symlink swapped in after the check is refused.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from typing import Any

from loom.errors import ToolError
from loom.tools.native.workspace import Workspace
from loom.tools.result import ErrorCode

__all__ = ["FsListTool", "FsReadTool", "FsWriteTool"]


class FsReadTool:
    name = "fs.read"
    description = "Read a file of the workspace (UTF-8 text, or base64 for binary); large files are truncated."
    provider = "native"
    schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "relative to the workspace"},
            "max_bytes": {"type": "integer", "minimum": 1},
        },
        "required": ["path"],
        "additionalProperties": False,
    }

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    async def execute(self, args: dict[str, Any]) -> dict[str, Any]:
        real = self.workspace.resolve(args["path"], self.name)
        cap = min(int(args.get("max_bytes") or self.workspace.max_read_bytes), self.workspace.max_read_bytes)
        return await asyncio.to_thread(self._read, real, cap)

    def _read(self, real: Any, cap: int) -> dict[str, Any]:
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise ToolError(
                ErrorCode.INVALID_PARAMS, self.name, f"no such file: {self.workspace.relative(real)}"
            ) from None
        except OSError as exc:
            raise ToolError(
                ErrorCode.PERMISSION_DENIED, self.name, f"cannot open {self.workspace.relative(real)}: {exc.strerror}"
            ) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise ToolError(
                ErrorCode.INVALID_PARAMS, self.name, f"{self.workspace.relative(real)} is not a regular file"
            )
        with os.fdopen(fd, "rb") as f:
            data = f.read(cap + 1)
        truncated = len(data) > cap
        data = data[:cap]
        out: dict[str, Any] = {"path": self.workspace.relative(real), "size": info.st_size, "truncated": truncated}
        try:
            out["content"], out["encoding"] = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            out["content"], out["encoding"] = base64.b64encode(data).decode(), "base64"
        return out


class FsWriteTool:
    name = "fs.write"
    description = "Write (or append) a UTF-8 text file in the workspace, creating parent directories."
    provider = "native"
    schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string"},
            "content": {"type": "string"},
            "append": {"type": "boolean", "default": False},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    }

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    async def execute(self, args: dict[str, Any]) -> dict[str, Any]:
        real = self.workspace.resolve(args["path"], self.name)
        data = args["content"].encode()
        if len(data) > self.workspace.max_write_bytes:
            raise ToolError(
                ErrorCode.PERMISSION_DENIED,
                self.name,
                f"{len(data)} bytes exceed the write cap of {self.workspace.max_write_bytes}",
            )
        return await asyncio.to_thread(self._write, real, data, bool(args.get("append")))

    def _write(self, real: Any, data: bytes, append: bool) -> dict[str, Any]:
        real.parent.mkdir(parents=True, exist_ok=True)
        self.workspace.resolve(str(real.parent), self.name)  # the parents too (a symlinked directory)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
        try:
            fd = os.open(real, flags, 0o644)
        except OSError as exc:
            raise ToolError(
                ErrorCode.PERMISSION_DENIED, self.name, f"cannot write {self.workspace.relative(real)}: {exc.strerror}"
            ) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return {"path": self.workspace.relative(real), "bytes_written": len(data), "appended": append}


class FsListTool:
    name = "fs.list"
    description = "List a directory of the workspace (name, is_dir, size), at most 1000 entries."
    provider = "native"
    schema = {
        "type": "object",
        "properties": {"path": {"type": "string", "default": "."}},
        "additionalProperties": False,
    }

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    async def execute(self, args: dict[str, Any]) -> dict[str, Any]:
        real = self.workspace.resolve(args.get("path") or ".", self.name)
        return await asyncio.to_thread(self._list, real)

    def _list(self, real: Any) -> dict[str, Any]:
        if not real.is_dir():
            raise ToolError(ErrorCode.INVALID_PARAMS, self.name, f"{self.workspace.relative(real)} is not a directory")
        entries = []
        for i, entry in enumerate(sorted(os.scandir(real), key=lambda e: e.name)):
            if i >= 1000:
                break
            is_dir = entry.is_dir(follow_symlinks=False)
            size = 0 if is_dir else entry.stat(follow_symlinks=False).st_size
            entries.append({"name": entry.name, "is_dir": is_dir, "size": size})
        return {"path": self.workspace.relative(real), "entries": entries}
