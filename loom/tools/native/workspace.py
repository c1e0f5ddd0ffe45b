"""The workspace: the one directory native tools may touch.

Paths are confined by resolving them for real (``..``, symlinks, absolute paths) and checking
that the result stays under the resolved root. A lexical check is not enough: upstream's let
``../../etc/passwd`` through.
"""

from __future__ import annotations

import os
from pathlib import Path

from loom.errors import ToolError, UsageError
from loom.tools.result import ErrorCode

__all__ = ["Workspace"]


class Workspace:
    """A root directory (created if missing) and the rules for paths inside it.

    Args:
        root: the workspace directory.
        max_read_bytes / max_write_bytes: size caps of ``fs.read`` / ``fs.write``.
    """

    def __init__(self, root: str | Path, *, max_read_bytes: int = 1_000_000, max_write_bytes: int = 1_000_000) -> None:
        if not isinstance(root, str | Path) or not str(root):
            raise UsageError(f"workspace must be a directory path, got {root!r}")
        path = Path(root).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(path))
        self.max_read_bytes = max_read_bytes
        self.max_write_bytes = max_write_bytes

    def resolve(self, path: object, tool: str) -> Path:
        """The real path of ``path`` (relative to the root, or absolute), if it stays inside.

        Raises:
            ToolError: ``INVALID_PARAMS`` (not a non-empty str), ``PERMISSION_DENIED`` (NUL byte,
                or the real path leaves the workspace).
        """
        if not isinstance(path, str) or not path:
            raise ToolError(ErrorCode.INVALID_PARAMS, tool, f"path must be a non-empty string, got {path!r}")
        if "\x00" in path:
            raise ToolError(ErrorCode.PERMISSION_DENIED, tool, "path contains a NUL byte")
        candidate = Path(os.path.expanduser(path))  # unlike Path.expanduser, no error for an unknown ~user
        if not candidate.is_absolute():
            candidate = self.root / candidate
        real = Path(os.path.realpath(candidate))
        if real != self.root and self.root not in real.parents:
            raise ToolError(
                ErrorCode.PERMISSION_DENIED, tool, f"{path!r} resolves to {real}, outside the workspace {self.root}"
            )
        return real

    def relative(self, real: Path) -> str:
        return real.relative_to(self.root).as_posix() or "."

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"
