"""The context store's SQLite schema, its version, and opening a file without harming it.

The schema version lives in ``PRAGMA user_version``. An existing file is first inspected through
a read-only connection: a file that is not SQLite, is corrupt, belongs to another application or
was written by a newer Loom raises :class:`ContextStoreError` before anything could write to it
(even switching the journal mode to WAL rewrites header bytes), so such a file stays byte-for-byte
as it was. Only then is it opened for writing and, when older, migrated in one transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from loom._sqlite import inspect_file
from loom.context.errors import ContextStoreError

__all__ = ["SCHEMA_VERSION", "connect"]

SCHEMA_VERSION = 1

# Version 1. ``seq`` orders items (write order, across processes); ``items_fts`` is an external
# content FTS5 index over ``text`` kept in step by triggers, queried with bm25(); ``vectors`` holds
# embeddings (float32, L2-normalised) keyed by the item's seq.
_SCHEMA_V1 = (
    """CREATE TABLE items (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        session TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        role TEXT,
        name TEXT,
        text TEXT NOT NULL,
        data TEXT,
        ok INTEGER,
        call_id TEXT,
        importance REAL NOT NULL,
        created_at REAL NOT NULL,
        tokens INTEGER NOT NULL,
        tokenizer TEXT NOT NULL,
        offload_ref TEXT,
        compacted_into TEXT
    )""",
    # Vectors apart from items: a 1-2 KB blob in each row would spread items over many more pages
    # and slow every scan and BM25 join that never looks at vectors.
    "CREATE TABLE vectors (seq INTEGER PRIMARY KEY, embedder TEXT NOT NULL, embedding BLOB NOT NULL)",
    "CREATE INDEX items_by_owner ON items (session, agent_id, seq)",
    # what compaction scans on every get_context: only the uncompacted tool steps
    """CREATE INDEX items_open_steps ON items (session, agent_id, seq)
        WHERE kind IN ('tool_call', 'tool_result') AND compacted_into IS NULL""",
    "CREATE VIRTUAL TABLE items_fts USING fts5 (text, content='items', content_rowid='seq')",
    """CREATE TRIGGER items_ai AFTER INSERT ON items BEGIN
        INSERT INTO items_fts (rowid, text) VALUES (new.seq, new.text);
    END""",
    """CREATE TRIGGER items_ad AFTER DELETE ON items BEGIN
        INSERT INTO items_fts (items_fts, rowid, text) VALUES ('delete', old.seq, old.text);
        DELETE FROM vectors WHERE seq = old.seq;
    END""",
    """CREATE TRIGGER items_au AFTER UPDATE OF text ON items BEGIN
        INSERT INTO items_fts (items_fts, rowid, text) VALUES ('delete', old.seq, old.text);
        INSERT INTO items_fts (rowid, text) VALUES (new.seq, new.text);
    END""",
)

# version reached -> the script that reaches it from the version before
_MIGRATIONS: dict[int, tuple[str, ...]] = {1: _SCHEMA_V1}
_OUR_TABLES = {"items", "items_fts", "vectors"}


def _inspect(path: Path) -> int:
    return inspect_file(
        path,
        error=ContextStoreError,
        version=SCHEMA_VERSION,
        tables=_OUR_TABLES,
        probe="SELECT count(*), max(seq) FROM items",
        foreign="a SQLite database of another application, not a Loom context store",
    )


def _migrate(db: sqlite3.Connection, path: str, version: int) -> None:
    if version == SCHEMA_VERSION:
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        # Re-read under the write lock: another process may have migrated meanwhile.
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise ContextStoreError(path, f"could not create or migrate the schema ({exc})") from exc


def connect(path: str | Path) -> sqlite3.Connection:
    """An open connection to the store at ``path`` (``":memory:"`` for a private in-memory one),
    in WAL mode with schema version :data:`SCHEMA_VERSION`.

    Raises:
        ContextStoreError: the file is not usable as it is (nothing was written to it).
    """
    memory = str(path) == ":memory:"
    version = 0
    if not memory:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            version = _inspect(path)
    # isolation_level=None: autocommit; multi-statement writes open their own transactions.
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        if not memory:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
            db.execute("PRAGMA busy_timeout=5000")  # two processes on one file wait, not fail
        _migrate(db, str(path), version)
    except BaseException:
        db.close()
        raise
    return db
