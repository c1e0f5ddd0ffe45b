"""The OS sandbox of ``shell.exec``: a bubblewrap command line and the resource limits inside it.

Why an OS sandbox: argument checks cannot be complete. ``grep -R`` and ``find -L`` follow a
symlink in the workspace that no argument names, options glue paths to their letters in ways no
list foresees, and a path checked before the call can be swapped before the command opens it. So
the command runs where the host is not there at all: a new mount namespace holding ``/usr`` (and
the ``/bin``, ``/lib`` symlinks into it) read-only, two single files of ``/etc``
(``ld.so.cache``, ``localtime``; never the directory, never ``passwd``), a fresh ``/proc`` of a new
pid namespace, a minimal ``/dev``, an empty tmpfs ``/tmp``, and the workspace bound at its own
path (read-only unless the tool is told it may write). Everything else (``/root``, ``/home``,
``/etc``, the rest of ``/tmp``, other users' processes, the network) does not exist in there, so a
symlink that leads out of the workspace dangles. ``--unshare-all`` (user, pid, network, ipc, uts,
cgroup namespaces), ``--disable-userns`` (no nested namespaces), ``--cap-drop ALL``,
``--new-session`` (no ``TIOCSTI`` on our terminal), ``--die-with-parent`` and ``--clearenv``.

Why ``prlimit`` inside the sandbox for the limits, not ``preexec_fn``/``resource``: a
``preexec_fn`` runs Python between fork and exec, which the ``subprocess`` docs call unsafe in a
process with threads, and the runtime has them (gRPC, ``asyncio.to_thread``). ``prlimit``
(util-linux, installed wherever bubblewrap is) sets the limits with prlimit(2) on itself and
execs the command, so they bind the command and everything it forks (inherited), not bwrap, and
they can be read off the command line. The kernel does not count ``RLIMIT_NPROC`` for a host root
user (seen here: a runtime running as root gets no process cap); there the pid namespace and the
call's timeout still end every process of the call.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from loom.errors import UsageError

__all__ = [
    "ETC_FILES",
    "INSTALL_HINT",
    "SANDBOX_MODES",
    "SandboxLimits",
    "bwrap_argv",
    "find_bwrap",
    "prlimit_argv",
    "visible_in_sandbox",
    "workspace_problem",
]

SANDBOX_MODES = ("bwrap", "none")
"""``bwrap``: the OS sandbox (default); ``none``: argument checks only (an explicit opt-out)."""
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")
"""The only host files of ``/etc`` a sandboxed command sees: the linker cache and the time zone."""
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_NOT_A_WORKSPACE = ("/proc", "/sys", "/dev")
INSTALL_HINT = (
    "install it (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: `dnf install bubblewrap`, "
    "or `make sysdeps`), or point to it with tool_options={'shell_bwrap': PATH} / $LOOM_BWRAP; "
    "to run commands with argument checks only, opt out with tool_options={'shell_sandbox': 'none'} "
    "/ LOOM_SHELL_SANDBOX=none"
)


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Resource limits of one command (set with ``prlimit`` before it starts).

    Attributes:
        cpu_seconds: ``RLIMIT_CPU`` (SIGXCPU at the limit, SIGKILL a second later).
        memory_bytes: ``RLIMIT_AS``, the address space of each process.
        processes: ``RLIMIT_NPROC`` (not enforced by the kernel when the runtime runs as host root).
        file_bytes: ``RLIMIT_FSIZE``, the largest file a command may write (``/tmp``, or a writable workspace).
        tmp_bytes: the size of the sandbox's private ``/tmp`` (a tmpfs).
    """

    cpu_seconds: int = 30
    memory_bytes: int = 1 << 30
    processes: int = 64
    file_bytes: int = 16 << 20
    tmp_bytes: int = 64 << 20

    @classmethod
    def of(cls, value: SandboxLimits | Mapping[str, int] | None) -> SandboxLimits:
        """Limits from ``None`` (the defaults), an instance, or a mapping of some of the fields.

        Raises:
            UsageError: an unknown field, or a value that is not a positive int.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise UsageError(f"shell limits must be a mapping of {[f.name for f in fields(cls)]}, got {value!r}")
        known = {f.name for f in fields(cls)}
        for key, number in value.items():
            if key not in known:
                raise UsageError(f"unknown shell limit {key!r}; choose from {sorted(known)}")
            if number.__class__ is not int or number < 1:
                raise UsageError(f"shell limit {key} must be a positive int, got {number!r}")
        return replace(cls(), **value)


def find_bwrap(explicit: str | None = None) -> str | None:
    """The bubblewrap executable: ``explicit``, else ``$LOOM_BWRAP``, else ``bwrap`` on ``$PATH``
    or in ``/usr/bin``/``/bin``. ``None`` when the one asked for (or any) is not there."""
    chosen = explicit or os.environ.get("LOOM_BWRAP")
    if chosen:
        return chosen if os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None
    return shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin")


def prlimit_argv(prlimit: str, limits: SandboxLimits) -> list[str]:
    """``prlimit`` setting ``limits`` and then running what follows (``[..., "--", exe, *args]``)."""
    return [
        prlimit,
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
        f"--as={limits.memory_bytes}",
        f"--nproc={limits.processes}",
        f"--fsize={limits.file_bytes}",
        "--core=0",
        "--",
    ]


def bwrap_argv(
    bwrap: str,
    workspace: Path,
    env: Mapping[str, str],
    limits: SandboxLimits,
    *,
    writable: bool,
    options: frozenset[str] | None = None,
) -> list[str]:
    """The bwrap command line up to and including ``--``; the command (with its limits) follows.

    ``options`` are those this bwrap knows (``bwrap --help``; ``None``: all): ``--disable-userns``,
    ``--size`` and ``--clearenv`` are left out of an older bwrap that lacks them rather than making
    the sandbox unavailable (bwrap is started with the scrubbed environment anyway).

    Raises:
        UsageError: a workspace that cannot be bound without undoing the sandbox (``/``, or under
            ``/proc``, ``/sys`` or ``/dev``).
    """
    problem = workspace_problem(workspace)
    if problem:
        raise UsageError(problem)
    root = str(workspace)

    def optional(*words: str) -> list[str]:
        return list(words) if options is None or words[0] in options else []

    argv = [bwrap, "--unshare-all", "--unshare-user", *optional("--disable-userns"), "--cap-drop", "ALL"]
    argv += ["--die-with-parent", "--new-session", "--hostname", "loom-sandbox", *optional("--clearenv")]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr", *_system_dirs()]
    for path in ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", *optional("--size", str(limits.tmp_bytes)), "--tmpfs", "/tmp"]
    # the workspace last: it may lie under /tmp or /usr, and a later mount covers an earlier one
    argv += ["--bind" if writable else "--ro-bind", root, root, "--chdir", root, "--"]
    return argv


def workspace_problem(workspace: Path) -> str | None:
    """Why ``workspace`` cannot be the sandbox's workspace (binding it would undo the sandbox), or ``None``."""
    root = str(workspace)
    if root == "/" or any(root == d or root.startswith(d + "/") for d in _NOT_A_WORKSPACE):
        return f"the workspace {root} cannot be bound into the shell sandbox: choose a project directory"
    return None


def visible_in_sandbox(path: str) -> bool:
    """Whether an executable's real path is inside what the sandbox binds (``/usr``, or a real ``/bin``...)."""
    real = os.path.realpath(path)
    roots = ["/usr"] + [d for d in _SYSTEM_DIRS if not os.path.islink(d) and os.path.isdir(d)]
    return any(real.startswith(r + "/") for r in roots)


@functools.cache
def _system_dirs() -> tuple[str, ...]:
    """``/bin``, ``/lib``... as the host has them: symlinks into ``/usr`` (merged /usr), or real directories."""
    out: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            if os.path.realpath(path).startswith("/usr/"):
                out += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            out += ["--ro-bind", path, path]
    return tuple(out)
