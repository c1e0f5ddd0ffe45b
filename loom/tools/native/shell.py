"""``shell.exec``: run an allowed command (argv, never a shell string) in the workspace, sandboxed.

Two layers. The boundary is the OS sandbox (bubblewrap, see :mod:`loom.tools.native.sandbox`):
the command sees the workspace, ``/usr`` and little else, under CPU, memory, process and
file-size limits. The argument checks are a second layer that refuses the plainly wrong before
anything runs: the command is an exact name from the allow-list (no paths), resolved on a fixed
system PATH; the default list has no interpreters, editors or commands that write files or run
other commands (no ``sh``, ``python``, ``sed``, ``awk``, ``find``, ``env``, ``xargs``, ``git``,
``sort -o``...). Every argument, every value glued to a short option (``-f/etc/passwd``,
``-nf../x``) and every value after ``=`` (``--file=/etc/passwd``) that could name a path is
resolved through the workspace, symlinks followed, and must stay inside.

Without bubblewrap the tool refuses (``PROVIDER_UNAVAILABLE``, saying how to install it) unless
the sandbox is turned off on purpose (``sandbox="none"``; ``LOOM_SHELL_SANDBOX=none``): then the
argument checks stand alone, a warning is logged and every result carries one.

The process gets a scrubbed environment (bwrap too: its init's ``/proc/1/environ`` is readable
inside), stdin closed, its own process group, output capped. A command that writes far past the
cap, outlives its timeout or is cancelled is killed with everything it started: in the sandbox,
killing the pid namespace's init ends every process in it, also those that left the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from loom.errors import ToolError, UsageError
from loom.tools.native.sandbox import (
    INSTALL_HINT,
    SANDBOX_MODES,
    SandboxLimits,
    bwrap_argv,
    find_bwrap,
    prlimit_argv,
    visible_in_sandbox,
    workspace_problem,
)
from loom.tools.native.workspace import Workspace
from loom.tools.result import ErrorCode

__all__ = ["DEFAULT_ALLOWED", "ShellTool"]

log = logging.getLogger("loom.tools")

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
NO_SANDBOX = "shell.exec runs without the OS sandbox (shell_sandbox='none'): argument checks only"
_PATH_MAX = 4096  # a longer string cannot be opened as a path (ENAMETOOLONG): nothing to check
_NAME_MAX = 255
_GRACE = 2.0  # seconds for bwrap to exit by itself once its init is killed


class ShellTool:
    """The ``shell.exec`` tool.

    Args:
        workspace: where commands run (and the only host directory the sandbox shows).
        allowed: command names that may run.
        max_output: bytes kept of stdout and of stderr each (``truncated`` beyond).
        sandbox: ``"bwrap"`` (default) or ``"none"`` (argument checks only); ``None`` reads
            ``$LOOM_SHELL_SANDBOX``.
        bwrap: the bubblewrap executable (default ``$LOOM_BWRAP``, else ``bwrap`` on PATH).
        writable: bind the workspace read-write (for an allow-list with commands that write).
        limits: :class:`SandboxLimits` or a mapping of some of its fields.
        check_args: the argument checks; turning them off is allowed only inside the sandbox.
    """

    name = "shell.exec"
    description = (
        "Run an allowed command (argv, no shell) in the workspace, in a sandbox that shows only the workspace "
        "and system programs; returns exit code, stdout and stderr."
    )
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
    drain_bytes = 1 << 20
    """Output read and dropped past ``max_output`` before the command is killed (``cat big.txt`` still ends)."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        allowed: Iterable[str] = DEFAULT_ALLOWED,
        max_output: int = 65_536,
        sandbox: str | None = None,
        bwrap: str | None = None,
        writable: bool = False,
        limits: SandboxLimits | Mapping[str, int] | None = None,
        check_args: bool = True,
    ) -> None:
        self.workspace = workspace
        self.allowed = frozenset(allowed)
        self.max_output = max_output
        self.sandbox = _sandbox_mode(sandbox)
        self.bwrap = bwrap
        self.writable = writable
        self.limits = SandboxLimits.of(limits)
        self.check_args = check_args
        self._ready: str | None = None  # the bwrap that has built a sandbox here (probed once)
        self._options: frozenset[str] | None = None  # the options that bwrap knows (None: all we use)
        if self.sandbox == "none":
            if not check_args:
                raise UsageError("check_args=False needs the OS sandbox (sandbox='bwrap'): nothing else would be left")
            log.warning("%s; install bubblewrap to confine commands to the workspace", NO_SANDBOX)

    async def execute(self, args: dict[str, Any]) -> dict[str, Any]:
        command, argv = args["command"], list(args.get("args") or [])
        if sum(map(len, argv)) > 8 * _PATH_MAX:  # long arguments take a while to check: off the loop
            exe = await asyncio.to_thread(self._check, command, argv)
        else:
            exe = self._check(command, argv)
        env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": str(self.workspace.root)}
        limited = self._prlimit()
        if self.sandbox == "bwrap":
            bwrap = await self._bwrap(env)
            sandbox = bwrap_argv(
                bwrap, self.workspace.root, env, self.limits, writable=self.writable, options=self._options
            )
            result = await self._run([*sandbox, *limited, exe, *argv], env, sandboxed=True)
        else:
            result = await self._run([*limited, exe, *argv], env, sandboxed=False)
        out = {"command": command, "args": argv, **result, "sandbox": self.sandbox}
        if self.sandbox == "none":
            out["warning"] = NO_SANDBOX + ("" if limited else "; no resource limits either (prlimit is missing)")
        return out

    # -- the argument checks ---------------------------------------------------------------
    def _check(self, command: str, args: list[str]) -> str:
        if "/" in command or command not in self.allowed:
            allowed = ", ".join(sorted(self.allowed))
            raise ToolError(
                ErrorCode.PERMISSION_DENIED, self.name, f"command {command!r} is not allowed (allowed: {allowed})"
            )
        exe = shutil.which(command, path=SYSTEM_PATH)
        if exe is None:
            raise ToolError(ErrorCode.NOT_FOUND, self.name, f"command {command!r} is not installed")
        if self.sandbox == "bwrap" and not visible_in_sandbox(exe):
            where = os.path.realpath(exe)
            raise ToolError(ErrorCode.NOT_FOUND, self.name, f"command {command!r} ({where}) is outside the sandbox")
        for arg in args:
            if "\x00" in arg:
                raise ToolError(ErrorCode.PERMISSION_DENIED, self.name, "an argument contains a NUL byte")
            if self.check_args:
                for value in _path_candidates(arg):
                    if _may_leave(self.workspace.root, value):
                        self.workspace.resolve(value, self.name)  # raises PERMISSION_DENIED when outside
        return exe

    # -- the sandbox -----------------------------------------------------------------------
    def _prlimit(self) -> list[str]:
        prlimit = shutil.which("prlimit", path=SYSTEM_PATH)
        if prlimit is not None and (self.sandbox == "none" or visible_in_sandbox(prlimit)):
            return prlimit_argv(prlimit, self.limits)
        if self.sandbox == "none":
            return []
        raise ToolError(
            ErrorCode.PROVIDER_UNAVAILABLE,
            self.name,
            "prlimit (util-linux) is missing from /usr/bin: the sandbox sets its resource limits with it",
        )

    async def _bwrap(self, env: dict[str, str]) -> str:
        """The bubblewrap to use; the first time, proof that it can build this sandbox here."""
        problem = workspace_problem(self.workspace.root)
        if problem:
            raise ToolError(ErrorCode.PERMISSION_DENIED, self.name, problem)
        bwrap = find_bwrap(self.bwrap)
        if bwrap is None:
            wanted = self.bwrap or os.environ.get("LOOM_BWRAP") or "bwrap on PATH"
            raise ToolError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                self.name,
                f"shell.exec runs commands in a bubblewrap sandbox, and bubblewrap is missing ({wanted} not found): "
                + INSTALL_HINT,
            )
        if self._ready != bwrap:
            usage = await self._run([bwrap, "--help"], env, sandboxed=False)
            known = frozenset(w for w in (usage["stdout"] + usage["stderr"]).split() if w.startswith("--"))
            self._options = known if "--unshare-all" in known else None
            probe = bwrap_argv(bwrap, self.workspace.root, env, self.limits, writable=False, options=self._options)
            result = await self._run([*probe, shutil.which("true", path=SYSTEM_PATH) or "/usr/bin/true"], env)
            if result["exit_code"] != 0:
                said = result["stderr"].strip()[-300:] or f"exit code {result['exit_code']}"
                raise ToolError(
                    ErrorCode.PROVIDER_UNAVAILABLE,
                    self.name,
                    f"bubblewrap ({bwrap}) cannot build the sandbox here ({said}); user namespaces may be "
                    f"disabled (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone). " + INSTALL_HINT,
                )
            self._ready = bwrap
        return bwrap

    # -- the process -----------------------------------------------------------------------
    async def _run(self, argv: list[str], env: dict[str, str], *, sandboxed: bool = True) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.workspace.root,
            env=env,  # bwrap too: what it was started with is readable inside as /proc/1/environ
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        killed: str | None = None

        def overflow() -> None:
            nonlocal killed
            if killed is None:
                killed = "output limit"
                _kill(proc, sandboxed)

        try:
            (out, out_cut), (err, err_cut) = await asyncio.gather(
                self._read(proc.stdout, overflow), self._read(proc.stderr, overflow)
            )
            code = await proc.wait()
        except BaseException:  # timeout or cancellation: kill everything the call started, then re-raise
            _kill(proc, sandboxed)
            try:
                async with asyncio.timeout(_GRACE):
                    await proc.wait()
            except TimeoutError:
                _kill_group(proc.pid)
                await proc.wait()
            raise
        return {
            "exit_code": code,
            "stdout": out.decode("utf-8", errors="replace"),
            "stderr": err.decode("utf-8", errors="replace"),
            "truncated": out_cut or err_cut,
            "killed": killed,
        }

    async def _read(self, stream: asyncio.StreamReader | None, overflow: Callable[[], None]) -> tuple[bytes, bool]:
        kept = bytearray()
        seen = 0
        while stream is not None:
            chunk = await stream.read(65_536)
            if not chunk:
                break
            seen += len(chunk)
            room = self.max_output - len(kept)
            if room > 0:
                kept += chunk[:room]
            if seen > self.max_output + self.drain_bytes:
                overflow()  # and keep reading: the pipe closes when the processes are gone
        return bytes(kept), seen > self.max_output


def _sandbox_mode(value: str | None) -> str:
    mode = value if value is not None else os.environ.get("LOOM_SHELL_SANDBOX") or "bwrap"
    if mode not in SANDBOX_MODES:
        source = "shell_sandbox" if value is not None else "$LOOM_SHELL_SANDBOX"
        raise UsageError(f"{source} must be one of {list(SANDBOX_MODES)}, got {mode!r}")
    return mode


def _path_candidates(arg: str) -> list[str]:
    """``arg``, the values a short option may have glued to it, and the values after each ``=``.

    In ``-nf/etc/passwd`` the option letters come first and a value may start after any of them
    (``f/etc/passwd``, ``/etc/passwd``), or at the first character that is not a letter.
    Candidates of ``_PATH_MAX`` characters or more cannot be opened, so they are not listed.
    """
    out = [arg]
    low = max(0, len(arg) - _PATH_MAX + 1)
    if arg.startswith("-") and not arg.startswith("--"):
        end = 1
        while end < len(arg) and arg[end].isalnum():
            end += 1
        out += [arg[i:] for i in range(max(2, low), min(end, len(arg) - 1) + 1)]
    at = arg.find("=", low)
    while at != -1:
        out.append(arg[at + 1 :])
        at = arg.find("=", at + 1)
    return out


def _may_leave(root: Path, value: str) -> bool:
    """Whether ``value`` could name something outside ``root`` (then it is resolved for real).

    A relative value without ``..`` whose first component does not exist in the workspace names
    nothing that could lead out: there is no symlink to follow.
    """
    if not value or len(value) >= _PATH_MAX:
        return False
    if value.startswith(("/", "~")) or ".." in value.split("/"):
        return True
    first = os.path.normpath(value).split("/", 1)[0]
    return len(first) <= _NAME_MAX and os.path.lexists(root / first)


def _kill(proc: asyncio.subprocess.Process, sandboxed: bool) -> None:
    """Kill a call's processes: in the sandbox, bwrap's child, the pid namespace's init (the kernel
    kills everything inside with it and bwrap reaps it, then exits); else the process group."""
    if proc.returncode is not None:
        return
    if sandboxed:
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(child), signal.SIGKILL)
        if children:
            return
    _kill_group(proc.pid)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
