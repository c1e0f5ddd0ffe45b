"""EventLog: an append-only SQLite file of bus traffic (what the Recorder writes, what replay reads).

One row per delivered event: its sequence number, when the recorder saw it (wall clock and an
offset on the recording session's monotonic clock), the topic, and every field of the
:class:`~loom.events.event.Event`, so replay re-publishes the very same event. The schema version
lives in ``PRAGMA user_version``; an existing file is inspected through a read-only connection
first, so one that is not SQLite, corrupt, another application's or from a newer Loom raises
:class:`EventLogError` and stays byte-for-byte as it was. WAL journaling means a process killed
mid-write leaves a log that opens with every committed batch and nothing half-written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom._sqlite import UnusableFile, inspect_file
from loom._version import __version__
from loom.events.event import Event

__all__ = ["SCHEMA_VERSION", "EventLog", "EventLogError", "Record"]

SCHEMA_VERSION = 1
_OUR_TABLES = {"meta", "sessions", "records"}

_SCHEMA_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE sessions (id INTEGER PRIMARY KEY, started_ns INTEGER NOT NULL, loom_version TEXT NOT NULL)",
    # offset_ns: on the session's monotonic clock, so replay timing survives wall-clock jumps.
    """CREATE TABLE records (
        seq INTEGER PRIMARY KEY,
        session INTEGER NOT NULL,
        wall_ns INTEGER NOT NULL,
        offset_ns INTEGER NOT NULL,
        topic TEXT NOT NULL,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        source TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        confidence REAL NOT NULL,
        metadata TEXT NOT NULL,
        tags TEXT NOT NULL,
        payload BLOB NOT NULL
    )""",
)
_MIGRATIONS: dict[int, tuple[str, ...]] = {1: _SCHEMA_V1}
_INSERT = (
    "INSERT INTO records (session, wall_ns, offset_ns, topic, id, type, source, timestamp_ms, priority, "
    "confidence, metadata, tags, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = (
    "SELECT seq, session, wall_ns, offset_ns, topic, id, type, source, timestamp_ms, priority, confidence, "
    "metadata, tags, payload FROM records WHERE seq > ? ORDER BY seq LIMIT ?"
)


class EventLogError(UnusableFile):
    """An event log file is unusable as it is (not SQLite, corrupt, another application's, from a
    newer Loom, or missing when only read). The file was not changed; the message names it.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    what = "event log"


@dataclass(frozen=True, slots=True)
class Record:
    """One recorded delivery: ``event`` as it was published on ``topic``."""

    seq: int
    session: int
    wall_ns: int
    offset_ns: int
    topic: str
    event: Event


def _inspect(path: Path) -> int:
    return inspect_file(
        path,
        error=EventLogError,
        version=SCHEMA_VERSION,
        tables=_OUR_TABLES,
        probe="SELECT max(seq) FROM records",
        foreign="not a Loom event log",
    )


def _encode(session: int, wall_ns: int, offset_ns: int, topic: str, e: Event) -> tuple[Any, ...]:
    metadata = json.dumps(e.metadata, separators=(",", ":"), ensure_ascii=False) if e.metadata else "{}"
    tags = json.dumps(e.tags, separators=(",", ":"), ensure_ascii=False) if e.tags else "[]"
    return (
        session,
        wall_ns,
        offset_ns,
        topic,
        e.id,
        e.type,
        e.source,
        e.timestamp_ms,
        e.priority,
        e.confidence,
        metadata,
        tags,
        e.payload,
    )


def _decode(row: Sequence[Any]) -> Record:
    seq, session, wall_ns, offset_ns, topic, id_, type_, source, ts, priority, confidence, md, tags, payload = row
    event = Event(
        type_,
        bytes(payload),
        source=source,
        metadata=json.loads(md) if md != "{}" else None,
        id=id_,
        timestamp_ms=ts,
        confidence=float(confidence),
        tags=json.loads(tags) if tags != "[]" else (),
        priority=priority,
    )
    return Record(seq, session, wall_ns, offset_ns, topic, event)


class EventLog:
    """An event log file (created with its parents unless ``readonly``; WAL; schema versioned).

    Not thread-safe: one thread at a time (the Recorder's writer thread, or replay's reads).

    Args:
        path: the SQLite file.
        readonly: only read (replay): the file must exist; nothing is ever written to it.
        max_bytes: retention: keep the records' pages under about this many bytes, oldest deleted first.
        max_age_s: retention: delete records older than this (by the wall clock they were recorded at).

    Raises:
        EventLogError: the file is not usable as it is (and was not changed).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
    ) -> None:
        if max_bytes is not None and (max_bytes.__class__ is not int or max_bytes < 64 * 1024):
            raise EventLogError(str(path), f"max_bytes must be an int >= 65536, got {max_bytes!r}")
        if max_age_s is not None and not max_age_s > 0:
            raise EventLogError(str(path), f"max_age_s must be > 0, got {max_age_s!r}")
        self.path = Path(path).absolute()
        self.readonly = readonly
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.pruned = 0
        """Records deleted by retention."""
        exists = self.path.exists() and self.path.stat().st_size > 0
        version = _inspect(self.path) if exists else 0
        if readonly and not version:
            raise EventLogError(str(self.path), "no such event log" if not exists else "an empty database")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # close() may come from the loop while a read runs in a worker thread (a cancelled replay).
        self._lock = threading.Lock()
        # isolation_level=None: autocommit; each batch opens its own transaction.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA busy_timeout=5000")
            if not readonly:
                self._create(version)
        except sqlite3.Error as exc:
            self.close()
            raise EventLogError(str(self.path), f"could not create the schema ({exc})") from exc
        except BaseException:
            self.close()
            raise

    def _create(self, version: int) -> None:
        db = self._conn
        if version == 0:
            # Before any table: freed pages are handed back so retention shrinks the file.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # a crash loses at most the last batches, never consistency
        db.execute(f"PRAGMA journal_size_limit={8 * 1024 * 1024}")  # the -wal file shrinks back after checkpoints
        if version == SCHEMA_VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("format", "loom.eventlog"),
                    ("created_by", f"loom {__version__}"),
                    ("created_ns", str(time.time_ns())),
                ],
            )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # some errors (SQLITE_FULL) have rolled back already
                db.execute("ROLLBACK")
            raise

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise EventLogError(str(self.path), "closed")
        return self._db

    # -- writing (the Recorder's thread) -------------------------------------------------
    def new_session(self) -> int:
        """Start a recording session (offsets of its records count from its start); returns its id."""
        cur = self._conn.execute(
            "INSERT INTO sessions (started_ns, loom_version) VALUES (?, ?)", (time.time_ns(), __version__)
        )
        return int(cur.lastrowid or 0)

    def append(self, session: int, wall_ns: int, offset_ns: int, items: Sequence[tuple[str, Event]]) -> None:
        """Write ``items`` (topic, event), all stamped with one time, in one transaction."""
        db = self._conn
        rows = [_encode(session, wall_ns, offset_ns, topic, event) for topic, event in items]
        db.execute("BEGIN")
        try:
            db.executemany(_INSERT, rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # some errors (SQLITE_FULL) have rolled back already
                db.execute("ROLLBACK")
            raise

    def apply_retention(self) -> int:
        """Delete what ``max_age_s`` / ``max_bytes`` no longer keep (oldest first); returns how many."""
        db = self._conn
        deleted = 0
        if self.max_age_s is not None:
            cutoff = time.time_ns() - int(self.max_age_s * 1e9)
            deleted += db.execute("DELETE FROM records WHERE wall_ns < ?", (cutoff,)).rowcount
        if self.max_bytes is not None:
            used = self.used_bytes()
            if used > self.max_bytes:
                lo, hi, n = db.execute("SELECT min(seq), max(seq), count(*) FROM records").fetchone()
                if n:
                    # Cut down to 80 % so that retention runs once per several batches, not on each.
                    cut = max(1, int(n * (1 - 0.8 * self.max_bytes / used)))
                    deleted += db.execute("DELETE FROM records WHERE seq < ?", (lo + cut,)).rowcount
        if deleted:
            db.execute("PRAGMA incremental_vacuum").fetchall()  # one page per step: run it to the end
            self.pruned += deleted
        return deleted

    def used_bytes(self) -> int:
        """Bytes of the database pages in use (the file's size less its free pages)."""
        db = self._conn
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages * db.execute("PRAGMA page_size").fetchone()[0])

    # -- reading -------------------------------------------------------------------------
    def read(self, after_seq: int = 0, limit: int = 1000) -> list[Record]:
        """Up to ``limit`` records with ``seq > after_seq``, in order."""
        with self._lock:
            return [_decode(row) for row in self._conn.execute(_SELECT, (after_seq, limit))]

    def last_seq(self) -> int:
        """The newest record's sequence number (0: none)."""
        with self._lock:
            return int(self._conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()[0])

    def __iter__(self) -> Iterator[Record]:
        after = 0
        while chunk := self.read(after):
            yield from chunk
            after = chunk[-1].seq

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def meta(self) -> dict[str, str]:
        """The header: format, created_by (Loom version), created_ns; plus ``schema``."""
        out = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        out["schema"] = str(SCHEMA_VERSION)
        return out

    def sessions(self) -> list[tuple[int, int, str]]:
        """(id, started_ns, loom_version) of each recording session, oldest first."""
        return [tuple(r) for r in self._conn.execute("SELECT id, started_ns, loom_version FROM sessions ORDER BY id")]

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EventLog {str(self.path)!r}{' closed' if self._db is None else ''}>"
