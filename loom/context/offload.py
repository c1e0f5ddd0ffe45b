"""Offloading: a large tool output goes to a file; the prompt gets a preview and where to read the rest.

Files are content-addressed (``<dir>/offload/<session>/<sha256 prefix>.txt``), so the same output
offloaded twice is written once. The reference line names a path the model can pass to
``fs.read`` (relative to the working directory when the file is under it, as the native tools'
workspace usually is).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from loom.context.errors import ContextStoreError
from loom.errors import UsageError

__all__ = ["Offloaded", "Offloader"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _session_dir_name(session: str) -> str:
    """A file-system-safe directory name for ``session``; a hash suffix keeps rewritten names apart."""
    safe = _UNSAFE.sub("_", session)[:64].strip(".") or "_"
    if safe != session:
        safe += "-" + hashlib.sha256(session.encode()).hexdigest()[:8]
    return safe


def _lines(text: str) -> int:
    return text.count("\n") + (0 if not text or text.endswith("\n") else 1)


@dataclass(frozen=True, slots=True)
class Offloaded:
    """Where an output went and what the prompt shows instead."""

    path: Path
    text: str
    bytes: int
    lines: int
    sha256: str


class Offloader:
    """Writes outputs over a threshold to files under ``<root>/offload/<session>/``.

    Args:
        root: the directory holding ``offload/`` (the store's directory). ``None``: a temporary
            directory created on first use and removed by :meth:`cleanup`.
        max_bytes, max_lines: an output larger than either is offloaded.
        preview_lines, preview_chars: how much of it the prompt keeps.
    """

    def __init__(
        self,
        root: str | Path | None,
        *,
        max_bytes: int = 2048,
        max_lines: int = 50,
        preview_lines: int = 10,
        preview_chars: int = 1000,
    ) -> None:
        self._root = None if root is None else Path(root).absolute()
        self._temp: Path | None = None
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.preview_lines = preview_lines
        self.preview_chars = preview_chars

    @property
    def base(self) -> Path:
        """``<root>/offload`` (creating the temporary root when there is none)."""
        if self._root is None:
            if self._temp is None:
                self._temp = Path(tempfile.mkdtemp(prefix="loom-context-"))
            return self._temp / "offload"
        return self._root / "offload"

    def should_offload(self, text: str) -> bool:
        # Cheap tests first: characters bound bytes from below, and from above by 4x.
        if len(text) > self.max_bytes or _lines(text) > self.max_lines:
            return True
        return len(text) * 4 > self.max_bytes and len(text.encode()) > self.max_bytes

    def offload(self, session: str, text: str) -> Offloaded:
        """Write ``text`` (if not already there) and build its preview + reference."""
        raw = text.encode()
        digest = hashlib.sha256(raw).hexdigest()
        folder = self.base / _session_dir_name(session)
        path = folder / f"{digest[:16]}.txt"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            # write-then-rename: a reader never sees half a file, even from another process
            tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")  # two writers never share one
            tmp.write_bytes(raw)
            os.replace(tmp, path)
        lines = _lines(text)
        shown = text.splitlines()[: self.preview_lines]
        preview = "\n".join(shown)
        if len(preview) > self.preview_chars:
            preview = preview[: self.preview_chars] + "…"
        shown_at = self.display(path)
        # fs.read reads under the workspace only: suggest it only where it can work
        how = "; read it with fs.read" if not Path(shown_at).is_absolute() else ""
        reference = (
            f"[full output: {len(raw)} bytes, {lines} lines in {shown_at}; showing the first {len(shown)} lines{how}]"
        )
        return Offloaded(path, f"{preview}\n{reference}", len(raw), lines, digest)

    @staticmethod
    def display(path: Path) -> str:
        """``path`` relative to the working directory when it is under it (what ``fs.read`` takes)."""
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return path.as_posix()

    def resolve(self, ref: str | Path) -> Path:
        """The offloaded file ``ref`` names (absolute, relative to the working directory, or a bare
        file name), if it is inside this offloader's directory.

        Raises:
            UsageError: ``ref`` is not a path under the offload directory.
            ContextStoreError: the file is gone.
        """
        if not isinstance(ref, str | Path) or not str(ref):
            raise UsageError(f"an offload reference must be a path, got {ref!r}")
        base = Path(os.path.realpath(self.base))
        candidates = [Path(ref)] if Path(ref).is_absolute() else [Path.cwd() / ref]
        if Path(ref).name == str(ref):  # a bare file name: look in every session's folder
            candidates += sorted(base.glob(f"*/{ref}"))
        for candidate in candidates:
            real = Path(os.path.realpath(candidate))
            if base not in real.parents:
                continue
            if real.is_file():
                return real
            raise ContextStoreError(str(real), "offloaded output is gone", "it was deleted after it was recorded")
        raise UsageError(f"{ref!s} is not an offloaded output of this context (they live under {base})")

    def read(self, ref: str | Path) -> str:
        return self.resolve(ref).read_text(encoding="utf-8", errors="replace")

    def remove(self, refs: list[str]) -> None:
        """Delete these offloaded files (the ones no stored item references any more)."""
        base = Path(os.path.realpath(self.base))
        for ref in refs:
            real = Path(os.path.realpath(ref))
            if base not in real.parents:  # a reference from elsewhere (another store's dir): not ours to delete
                continue
            try:
                real.unlink(missing_ok=True)
            except OSError:
                pass  # a file someone else removed or locked is not worth failing a clear() over

    def cleanup(self) -> None:
        """Remove the temporary directory, if this offloader made one."""
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
