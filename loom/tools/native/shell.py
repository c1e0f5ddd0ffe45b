"""``shell.exec``: run an allowed command (argv, never a shell string) in the workspace.

Rules: the command is an exact name from the allow-list (no paths), resolved on a fixed system
PATH; the default list has no interpreters, editors or commands that write files or run other
commands (no ``sh``, ``python``, ``sed``, ``awk``, ``find``, ``env``, ``xargs``, ``git``,
``sort -o``...). Arguments that look like paths (absolute, ``~``, or containing ``..``) must
resolve inside the workspace. The process runs in the workspace with a scrubbed environment, in
its own process group, with output capped; on timeout or cancellation the whole group is killed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Iterable
from typing import Any

from loom.errors import ToolError
from loom.tools.native.workspace import Workspace
from loom.tools.result import ErrorCode

__all__ = ["DEFAULT_ALLOWED", "ShellTool"]

DEFAULT_ALLOWED = frozenset(
    {
        "ls",
        "cat",
        "head",
        "tail",
        "wc",
        "grep",
        "cut",
        "tr",
        "diff",
        "cmp",
        "echo",
        "printf",
        "date",
        "pwd",
        "stat",
        "file",
        "basename",
        "dirname",
        "du",
        "uname",
        "whoami",
        "nl",
        "md5sum",
        "sha256sum",
        "true",
        "false",
    }
)
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


class ShellTool:
    """The ``shell.exec`` tool."""

    name = "shell.exec"
    description = "Run an allowed command (argv, no shell) in the workspace; returns exit code, stdout and stderr."
    provider = "native"
    schema = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "command name from the allow-list, e.g. ls"},
            "args": {"type": "array", "items": {"type": "string"}, "default": []},
        },
        "required": ["command"],
        "additionalProperties": False,
    }

    def __init__(self, workspace: Workspace, *, allowed: Iterable[str] = DEFAULT_ALLOWED, max_output: int = 65_536):
        self.workspace = workspace
        self.allowed = frozenset(allowed)
        self.max_output = max_output

    def _check(self, command: str, args: list[str]) -> str:
        if "/" in command or command not in self.allowed:
            allowed = ", ".join(sorted(self.allowed))
            raise ToolError(
                ErrorCode.PERMISSION_DENIED, self.name, f"command {command!r} is not allowed (allowed: {allowed})"
            )
        exe = shutil.which(command, path=SYSTEM_PATH)
        if exe is None:
            raise ToolError(ErrorCode.NOT_FOUND, self.name, f"command {command!r} is not installed")
        for arg in args:
            if "\x00" in arg:
                raise ToolError(ErrorCode.PERMISSION_DENIED, self.name, "an argument contains a NUL byte")
            value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
            if value.startswith(("/", "~")) or ".." in value.split("/"):
                self.workspace.resolve(value, self.name)  # raises PERMISSION_DENIED when outside
        return exe

    async def execute(self, args: dict[str, Any]) -> dict[str, Any]:
        command, argv = args["command"], list(args.get("args") or [])
        exe = self._check(command, argv)
        env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": str(self.workspace.root)}
        proc = await asyncio.create_subprocess_exec(
            exe,
            *argv,
            cwd=self.workspace.root,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            (out, out_cut), (err, err_cut) = await asyncio.gather(self._read(proc.stdout), self._read(proc.stderr))
            code = await proc.wait()
        except BaseException:  # timeout or cancellation: kill the whole group, then re-raise
            _kill_group(proc)
            await proc.wait()
            raise
        return {
            "command": command,
            "args": argv,
            "exit_code": code,
            "stdout": out.decode("utf-8", errors="replace"),
            "stderr": err.decode("utf-8", errors="replace"),
            "truncated": out_cut or err_cut,
        }

    async def _read(self, stream: asyncio.StreamReader | None) -> tuple[bytes, bool]:
        kept = bytearray()
        cut = False
        while stream is not None:
            chunk = await stream.read(65_536)
            if not chunk:
                break
            room = self.max_output - len(kept)
            if room > 0:
                kept += chunk[:room]
            cut = cut or len(chunk) > room  # keep draining so the process is not blocked on a full pipe
        return bytes(kept), cut


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
