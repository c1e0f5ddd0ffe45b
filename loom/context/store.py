"""Context stores: the ``ContextStore`` protocol and its one implementation, on SQLite.

``SQLiteContextStore(path)`` keeps items in a file (WAL, so several connections and processes can
share it); :class:`MemoryContextStore` is the same code on a private ``:memory:`` database, so the
two never drift apart. Methods are sync: a write or a lookup takes microseconds to a millisecond,
less than a hop to a worker thread would cost. Keyword relevance is SQLite FTS5's ``bm25()``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from loom.context.errors import ContextStoreError
from loom.context.item import ContextItem
from loom.context.schema import connect
from loom.errors import ClosedError

__all__ = ["DEFAULT_PATH", "ContextStore", "MemoryContextStore", "SQLiteContextStore", "fts_query", "fts_terms"]

DEFAULT_PATH = Path(".loom") / "context.db"
"""Where :meth:`AgentContext.with_defaults` keeps its store, relative to the working directory."""

_COLUMNS = (
    "seq, id, session, agent_id, kind, role, name, text, data, ok, call_id, importance, created_at, "
    "tokens, tokenizer, offload_ref, compacted_into"
)
_TERM = re.compile(r"[^\W_]+")  # unicode61 splits on "_" too


def fts_terms(text: str, max_terms: int = 32) -> list[str]:
    """The distinct lowercased words of ``text`` as FTS5's unicode61 tokenizer splits them."""
    return list(dict.fromkeys(t for t in _TERM.findall(text.lower()) if len(t) > 1))[:max_terms]


def fts_query(terms: Sequence[str]) -> str | None:
    """An FTS5 query matching any of ``terms`` (each quoted, so no word is read as FTS syntax)."""
    return " OR ".join(f'"{t}"' for t in terms) if terms else None


def _item(row: Sequence[Any]) -> ContextItem:
    (seq, id_, session, agent_id, kind, role, name, text, data, ok, call_id, imp, created, tokens, tok, ref, into) = row
    return ContextItem(
        seq=seq,
        id=id_,
        session=session,
        agent_id=agent_id,
        kind=kind,
        role=role,
        name=name,
        text=text,
        data=None if data is None else json.loads(data),
        ok=None if ok is None else bool(ok),
        call_id=call_id,
        importance=imp,
        created_at=created,
        tokens=tokens,
        tokenizer=tok,
        offload_ref=ref,
        compacted_into=into,
    )


@runtime_checkable
class ContextStore(Protocol):
    """Where an :class:`AgentContext` keeps items. Every query is scoped to one (session, agent)."""

    @property
    def directory(self) -> Path | None:
        """The directory offloaded outputs go under (``None``: the store has no file)."""

    def add(self, item: ContextItem, *, embedder: str | None = None, embedding: bytes | None = None) -> ContextItem:
        """Store ``item``; returns it with its sequence number."""

    def get(self, item_id: str) -> ContextItem | None: ...

    def recent(self, session: str, agent_id: str, limit: int) -> list[ContextItem]:
        """The newest ``limit`` uncompacted items, newest first."""

    def informative_terms(self, text: str) -> list[str]:
        """The words of ``text`` a keyword query should use."""

    def keyword(
        self,
        session: str,
        agent_id: str,
        terms: Sequence[str],
        limit: int,
        *,
        min_seq: int = 0,
        max_seq: int | None = None,
    ) -> list[tuple[int, float]]:
        """(seq, BM25 relevance) of up to ``limit`` uncompacted items (seq within ``min_seq..max_seq``)
        matching any of ``terms``, best first (positive: higher is better)."""

    def by_seq(self, seqs: Iterable[int]) -> list[ContextItem]:
        """The uncompacted items with these sequence numbers."""

    def embeddings(self, session: str, agent_id: str, embedder: str, after_seq: int) -> list[tuple[int, bytes]]:
        """(seq, float32 blob) of uncompacted items embedded by ``embedder``, with seq > ``after_seq``."""

    def tool_items(self, session: str, agent_id: str) -> list[ContextItem]:
        """Uncompacted tool calls and results, oldest first (what compaction works on)."""

    def compact(self, summary: ContextItem, covered: Sequence[str]) -> ContextItem | None:
        """Atomically store ``summary`` and mark ``covered`` as compacted into it; ``None`` (and no
        change) when any of them was compacted meanwhile."""

    def history(self, session: str, agent_id: str, limit: int) -> list[ContextItem]:
        """The newest ``limit`` items, compacted ones included, oldest first."""

    def count(self, session: str, agent_id: str) -> int: ...

    def clear(self, session: str, agent_id: str) -> list[str]:
        """Delete the items; returns their offload references that no remaining item shares."""

    def close(self) -> None: ...


class SQLiteContextStore:
    """A context store in a SQLite file (created with its parents; WAL; schema versioned).

    Several stores (connections) and processes may share one file: each query is scoped to a
    (session, agent), and ``seq`` orders writes across them.

    Args:
        path: the database file, or ``":memory:"`` (see :class:`MemoryContextStore`).

    Raises:
        ContextStoreError: the file is not a database, is corrupt, belongs to another application,
            or was written by a newer Loom (the file is left untouched).
    """

    def __init__(self, path: str | Path) -> None:
        self.path: Path | None = None if str(path) == ":memory:" else Path(path).absolute()
        self._db: sqlite3.Connection | None = connect(self.path or ":memory:")
        # Per-connection view of the FTS index's document frequencies (temp: nothing is written to the file).
        self._db.execute("CREATE VIRTUAL TABLE temp.items_vocab USING fts5vocab(main, items_fts, 'row')")

    @property
    def directory(self) -> Path | None:
        return None if self.path is None else self.path.parent

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ClosedError(f"context store {self.path or ':memory:'} is closed")
        return self._db

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise ContextStoreError(str(self.path or ":memory:"), f"query failed ({exc})") from exc

    def add(self, item: ContextItem, *, embedder: str | None = None, embedding: bytes | None = None) -> ContextItem:
        data = None if item.data is None else json.dumps(item.data, ensure_ascii=False, default=str)
        ok = None if item.ok is None else int(item.ok)
        db = self._conn
        own = embedding is not None and not db.in_transaction  # item and vector land together, or neither
        try:
            if own:
                db.execute("BEGIN")
            cur = db.execute(
                f"INSERT INTO items ({_COLUMNS.replace('seq, ', '', 1)}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.id, item.session, item.agent_id, item.kind, item.role, item.name, item.text, data, ok,
                    item.call_id, item.importance, item.created_at, item.tokens, item.tokenizer, item.offload_ref,
                    item.compacted_into,
                ),
            )  # fmt: skip
            seq = cur.lastrowid or 0
            if embedding is not None:
                db.execute(
                    "INSERT INTO vectors (seq, embedder, embedding) VALUES (?, ?, ?)", (seq, embedder or "", embedding)
                )
            if own:
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if own and db.in_transaction:
                db.execute("ROLLBACK")
            raise ContextStoreError(str(self.path or ":memory:"), f"write failed ({exc})") from exc
        return item.with_(seq=seq)

    def get(self, item_id: str) -> ContextItem | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (item_id,))
        return _item(rows[0]) if rows else None

    def recent(self, session: str, agent_id: str, limit: int) -> list[ContextItem]:
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM items WHERE session = ? AND agent_id = ? AND compacted_into IS NULL "
            "ORDER BY seq DESC LIMIT ?",
            (session, agent_id, limit),
        )
        return [_item(r) for r in rows]

    def informative_terms(self, text: str) -> list[str]:
        """The words of ``text`` worth a BM25 query: those in at most half of the indexed items
        (all of them if every word is more common).

        SQLite's bm25() gives a term in more than half of the documents an IDF of ~0 (it clamps
        the negative value to 1e-6), so such words ("the", "is") change no ranking, yet matching
        them makes bm25() score nearly every row. Leaving them out is free relevance-wise.
        """
        terms = fts_terms(text)
        if not terms:
            return []
        total = self._rows("SELECT count(*) FROM items", ())[0][0]
        common = {
            term
            for term in terms
            for (doc,) in self._rows("SELECT doc FROM temp.items_vocab WHERE term = ?", (term,))
            if doc * 2 > total
        }
        # Only when something informative remains: if every word is common, matching is all there is.
        return [t for t in terms if t not in common] or terms

    def keyword(
        self,
        session: str,
        agent_id: str,
        terms: Sequence[str],
        limit: int,
        *,
        min_seq: int = 0,
        max_seq: int | None = None,
    ) -> list[tuple[int, float]]:
        query = fts_query(terms)
        if query is None or limit <= 0 or (max_seq is not None and max_seq < min_seq):
            return []
        rows = self._rows(
            "SELECT items.seq, bm25(items_fts) AS score FROM items_fts JOIN items ON items.seq = items_fts.rowid "
            "WHERE items_fts MATCH ? AND items_fts.rowid BETWEEN ? AND ? AND items.session = ? "
            "AND items.agent_id = ? AND items.compacted_into IS NULL ORDER BY score LIMIT ?",
            (query, min_seq, (1 << 62) if max_seq is None else max_seq, session, agent_id, limit),
        )
        # bm25() is negative, more negative = more relevant; flip it so higher is better.
        return [(seq, -float(score)) for seq, score in rows]

    def by_seq(self, seqs: Iterable[int]) -> list[ContextItem]:
        wanted = list(seqs)
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        rows = self._rows(f"SELECT {_COLUMNS} FROM items WHERE seq IN ({marks}) AND compacted_into IS NULL", wanted)
        return [_item(r) for r in rows]

    def embeddings(self, session: str, agent_id: str, embedder: str, after_seq: int) -> list[tuple[int, bytes]]:
        return [
            (seq, blob)
            for seq, blob in self._rows(
                "SELECT vectors.seq, vectors.embedding FROM vectors JOIN items ON items.seq = vectors.seq "
                "WHERE vectors.seq > ? AND vectors.embedder = ? AND items.session = ? AND items.agent_id = ? "
                "AND items.compacted_into IS NULL ORDER BY vectors.seq",
                (after_seq, embedder, session, agent_id),
            )
        ]

    def tool_items(self, session: str, agent_id: str) -> list[ContextItem]:
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM items WHERE session = ? AND agent_id = ? "
            "AND kind IN ('tool_call', 'tool_result') AND compacted_into IS NULL ORDER BY seq",
            (session, agent_id),
        )
        return [_item(r) for r in rows]

    def compact(self, summary: ContextItem, covered: Sequence[str]) -> ContextItem | None:
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                marks = ", ".join("?" * len(covered))
                cur = db.execute(
                    f"UPDATE items SET compacted_into = ? WHERE id IN ({marks}) AND compacted_into IS NULL",
                    (summary.id, *covered),
                )
                if cur.rowcount != len(covered):  # another context compacted some of them first
                    db.execute("ROLLBACK")
                    return None
                stored = self.add(summary)
                db.execute("COMMIT")
                return stored
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise ContextStoreError(str(self.path or ":memory:"), f"compaction failed ({exc})") from exc

    def history(self, session: str, agent_id: str, limit: int) -> list[ContextItem]:
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM items WHERE session = ? AND agent_id = ? ORDER BY seq DESC LIMIT ?",
            (session, agent_id, limit),
        )
        return [_item(r) for r in reversed(rows)]

    def count(self, session: str, agent_id: str) -> int:
        return int(
            self._rows("SELECT count(*) FROM items WHERE session = ? AND agent_id = ?", (session, agent_id))[0][0]
        )

    def clear(self, session: str, agent_id: str) -> list[str]:
        refs = {
            r[0]
            for r in self._rows(
                "SELECT DISTINCT offload_ref FROM items WHERE session = ? AND agent_id = ? AND offload_ref IS NOT NULL",
                (session, agent_id),
            )
        }
        self._rows("DELETE FROM items WHERE session = ? AND agent_id = ?", (session, agent_id))
        # Offloaded files are content-addressed: another agent may hold the same output.
        return sorted(r for r in refs if not self._rows("SELECT 1 FROM items WHERE offload_ref = ? LIMIT 1", (r,)))

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path or ':memory:')!r})"


class MemoryContextStore(SQLiteContextStore):
    """A private in-memory store (the SQLite code on ``:memory:``): gone when closed."""

    def __init__(self) -> None:
        super().__init__(":memory:")
