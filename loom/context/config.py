"""ContextConfig: every knob of the context pipeline, with upstream's defaults where it had them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from loom.context.item import KINDS
from loom.errors import UsageError

__all__ = ["DEFAULT_IMPORTANCE", "ContextConfig", "RankWeights"]

# Importance when the caller gives none: what the user asked and what failed matter most.
DEFAULT_IMPORTANCE: dict[str, float] = {
    "message:user": 0.6,
    "message:assistant": 0.5,
    "message:system": 0.7,
    "tool_call": 0.4,
    "tool_result:ok": 0.5,
    "tool_result:failed": 0.6,
    "observation": 0.5,
    "summary": 0.7,
}


def _number(owner: str, name: str, value: Any, *, low: float = 0.0, integer: bool = False) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int if integer else int | float)
    if bad or not math.isfinite(value) or value < low:
        kind = "an int" if integer else "a number"
        raise UsageError(f"{owner}.{name} must be {kind} >= {low:g}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RankWeights:
    """Weights of the ranking score (see :mod:`loom.context.ranking`): each term is in 0..1."""

    recency: float = 1.0
    importance: float = 0.5
    keyword: float = 1.0
    semantic: float = 1.0

    def __post_init__(self) -> None:
        for name in ("recency", "importance", "keyword", "semantic"):
            _number("RankWeights", name, getattr(self, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextConfig:
    """How :meth:`AgentContext.get_context` retrieves, ranks, windows, compacts and offloads.

    Args:
        max_tokens: the model's context window (prompt + response).
        reserve: tokens kept free for the response.
        candidates: recency retrieval: the newest N items are candidates.
        kinds: the kinds retrieved (type filter); the others are dropped with a reason.
        importance_floor: items below it are dropped ("below importance floor").
        keyword_hits: BM25 retrieval: up to N older items matching the trigger's words join.
        semantic_hits: with an embedder, up to N items most similar to the trigger join.
        weights: the ranking weights.
        recency_half_life: the recency term halves every N items back from the newest.
        keep_recent_steps: tool steps (call + result) newer than this many are never compacted.
        compact_min_steps: compaction waits until at least this many older steps are uncompacted.
        offload_bytes, offload_lines: a tool result larger than either is written to a file.
        preview_lines, preview_chars: the size of an offloaded result's preview in the prompt.
        arg_chars: a tool argument's string value is cut to this many characters in ``text``.
        importance: default importance per kind (see ``DEFAULT_IMPORTANCE``).
    """

    max_tokens: int = 8000
    reserve: int = 1000
    candidates: int = 200
    kinds: frozenset[str] = KINDS
    importance_floor: float = 0.0
    keyword_hits: int = 20
    semantic_hits: int = 20
    weights: RankWeights = field(default_factory=RankWeights)
    recency_half_life: float = 20.0
    keep_recent_steps: int = 5
    compact_min_steps: int = 5
    offload_bytes: int = 2048
    offload_lines: int = 50
    preview_lines: int = 10
    preview_chars: int = 1000
    arg_chars: int = 200
    importance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_IMPORTANCE))

    def __post_init__(self) -> None:
        for name in ("max_tokens", "candidates", "offload_bytes", "offload_lines", "compact_min_steps"):
            _number("ContextConfig", name, getattr(self, name), low=1, integer=True)
        for name in ("reserve", "keyword_hits", "semantic_hits", "keep_recent_steps", "preview_lines"):
            _number("ContextConfig", name, getattr(self, name), integer=True)
        for name in ("preview_chars", "arg_chars"):
            _number("ContextConfig", name, getattr(self, name), low=16, integer=True)
        _number("ContextConfig", "recency_half_life", self.recency_half_life, low=1e-9)
        if not 0.0 <= self.importance_floor <= 1.0:
            raise UsageError(f"ContextConfig.importance_floor must be within 0..1, got {self.importance_floor!r}")
        if self.reserve >= self.max_tokens:
            raise UsageError(
                f"ContextConfig.reserve ({self.reserve}) must be smaller than max_tokens ({self.max_tokens})"
            )
        unknown = set(self.kinds) - KINDS
        if unknown or not self.kinds:
            raise UsageError(
                f"ContextConfig.kinds must be a non-empty subset of {sorted(KINDS)}, got {sorted(self.kinds)}"
            )
        if not isinstance(self.weights, RankWeights):
            raise UsageError(f"ContextConfig.weights must be a RankWeights, got {self.weights!r}")
        object.__setattr__(self, "kinds", frozenset(self.kinds))
        object.__setattr__(self, "importance", {**DEFAULT_IMPORTANCE, **self.importance})

    def default_importance(self, key: str) -> float:
        return self.importance.get(key, 0.5)
