"""Our versioned SQLite files (the context store, the event log): inspected before anything writes.

A file's schema version lives in ``PRAGMA user_version``. :func:`inspect_file` reads an existing
file through a connection that cannot change it (``immutable=1`` when there is no ``-wal`` file
to recover, so not even side files appear; ``mode=ro`` otherwise): one that is not SQLite, is
corrupt, belongs to another application or was written by a newer Loom raises an
:class:`UnusableFile` naming it before anything could write to it (even switching the journal
mode to WAL rewrites header bytes), so such a file stays byte-for-byte as it was.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from loom.errors import LoomError

__all__ = ["QUICK_CHECK_MAX", "UnusableFile", "inspect_file"]

QUICK_CHECK_MAX = 64 * 1024 * 1024
"""Files up to this size get ``PRAGMA quick_check`` on open (it reads every page, ~1.5 ms per MB);
above it, corruption surfaces from the first query that meets it."""

_MAGIC = b"SQLite format 3\x00"


class UnusableFile(LoomError):
    """A file of ours cannot be used as it is; it was not changed. ``what`` names the kind of file.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    what = "file"

    def __init__(self, path: str, reason: str, advice: str = "") -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{self.what} {path}: {reason}" + (f"; {advice}" if advice else ""))


def inspect_file(
    path: Path, *, error: type[UnusableFile], version: int, tables: set[str], probe: str, foreign: str
) -> int:
    """The schema version of the existing file ``path`` (0: an empty database), read without writing.

    Args:
        error: what to raise (the kind of file's own :class:`UnusableFile`).
        version: the newest schema version this Loom reads.
        tables: the tables a file of this kind has.
        probe: a query that reads its main table (a damaged page shows there first).
        foreign: how to call a SQLite file without them (``"not a Loom event log"``).
    """
    with path.open("rb") as f:
        head = f.read(len(_MAGIC))
    if head != _MAGIC:
        raise error(str(path), "not a SQLite database", "pass another path; the file was not changed")
    wal = path.with_name(path.name + "-wal").exists()
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}", uri=True)
    except sqlite3.Error as exc:
        raise error(str(path), f"cannot be opened ({exc})", "check its permissions") from exc
    try:
        found = int(db.execute("PRAGMA user_version").fetchone()[0])
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if found > version:
            raise error(
                str(path),
                f"written by a newer Loom (schema version {found}; this Loom reads up to {version})",
                "upgrade loom-notebook, or pass another path; the file was not changed",
            )
        if (found == 0 and names) or (found and not names >= tables):
            raise error(
                str(path),
                f"{foreign} (schema version {found}, tables {sorted(names)})",
                "pass another path; the file was not changed",
            )
        if found:
            if path.stat().st_size <= QUICK_CHECK_MAX:
                check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
                if check != "ok":
                    raise sqlite3.DatabaseError(check)
            db.execute(probe).fetchone()
        return found
    except sqlite3.DatabaseError as exc:
        raise error(
            str(path), f"corrupt ({exc})", "move it away (or restore a backup); the file was not changed"
        ) from exc
    finally:
        db.close()
