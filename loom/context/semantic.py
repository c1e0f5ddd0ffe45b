"""Semantic retrieval: one (session, agent)'s stored vectors in memory, compared with numpy.

The vectors live in the store (float32 blobs, L2-normalised when written); this index mirrors
them in one matrix, loading only rows newer than the last it saw, so ``get_context`` costs one
matrix-vector product instead of reading every blob again. Rows of items compacted meanwhile
are filtered out when the items are fetched (the store never returns compacted items).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from loom.context.embed import Embedder, from_blob, to_blob
from loom.context.store import ContextStore

__all__ = ["VectorIndex", "normalised_blob"]


def normalised_blob(vector: Sequence[float]) -> bytes:
    """``vector`` scaled to unit length, as float32 bytes (cosine is then a dot product)."""
    import numpy as np

    vec = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vec))
    return to_blob(vec / norm if norm > 0 else vec)


class VectorIndex:
    """Cosine similarity of a query with every stored vector of one (session, agent)."""

    def __init__(self, store: ContextStore, session: str, agent_id: str, embedder: Embedder) -> None:
        self._store = store
        self._session = session
        self._agent_id = agent_id
        self.embedder = embedder
        self._seqs: list[int] = []
        self._rows: list[Any] = []
        self._matrix: Any = None  # built from _rows when a query needs it
        self._position: dict[int, int] = {}
        self._after = 0

    def reset(self) -> None:
        """Forget everything (after ``clear()``); the next query reloads from the store."""
        self._seqs, self._rows, self._matrix, self._after = [], [], None, 0

    def discard(self, seqs: Iterable[int]) -> None:
        """Drop the rows of these items (compacted by this context)."""
        gone = set(seqs)
        if gone & set(self._seqs):
            kept = [(s, r) for s, r in zip(self._seqs, self._rows, strict=True) if s not in gone]
            self._seqs = [s for s, _ in kept]
            self._rows = [r for _, r in kept]
            self._matrix = None

    def _refresh(self) -> None:
        fresh = self._store.embeddings(self._session, self._agent_id, self.embedder.name, self._after)
        for seq, blob in fresh:
            try:
                row = from_blob(blob, self.embedder.dim)
            except ValueError:
                continue  # written by an embedder of the same name but another size: not comparable
            self._seqs.append(seq)
            self._rows.append(row)
        if fresh:
            self._after = fresh[-1][0]
            self._matrix = None

    async def similarities(self, text: str, hits: int, also: Iterable[int] = ()) -> dict[int, float]:
        """seq -> cosine for the ``hits`` most similar items, and for the items in ``also``."""
        import numpy as np

        self._refresh()
        if not self._seqs or not text.strip():
            return {}
        (query,) = await asyncio.to_thread(self.embedder.embed, [text])
        q = np.frombuffer(normalised_blob(query), dtype=np.float32)
        if self._matrix is None:
            self._matrix = np.vstack(self._rows)
            self._position = {s: i for i, s in enumerate(self._seqs)}
        sims = self._matrix @ q
        out: dict[int, float] = {}
        if hits > 0:
            top = np.argpartition(-sims, min(hits, len(sims)) - 1)[:hits] if len(sims) > hits else range(len(sims))
            out = {self._seqs[i]: float(sims[i]) for i in top}
        wanted = set(also) - out.keys()
        if wanted:
            out.update({s: float(sims[self._position[s]]) for s in wanted if s in self._position})
        return out

    async def embed_blob(self, text: str) -> bytes:
        """The normalised vector of ``text`` as stored (computed in a worker thread)."""
        (vector,) = await asyncio.to_thread(self.embedder.embed, [text])
        return normalised_blob(vector)
