"""Ranking: candidates grouped into units and scored.

A *unit* is what enters or leaves the prompt whole: a message, an observation, a summary, or a
tool step (its call and its result together, so the model never sees a result without its call).
Each unit is scored::

    score = w_recency    * 0.5 ** (rank / half_life)     # rank 0 = the newest candidate
          + w_importance * max(importance)               # 0..1, per item
          + w_keyword    * bm25 / best bm25              # FTS5 bm25() against the trigger, 0..1
          + w_semantic   * max(0, cosine)                # with an embedder, 0..1

with default weights 1.0 / 0.5 / 1.0 / 1.0 and a half-life of 20 items. Recency is by rank, not
age in seconds, so a conversation resumed after a week is not "all old". The newest message is
pinned (its score is infinite): whatever else competes, the turn being answered stays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from loom.context.compaction import step_keys
from loom.context.config import RankWeights
from loom.context.item import ContextItem

__all__ = ["Unit", "build_units", "score_units"]


@dataclass(slots=True)
class Unit:
    """Items that enter or leave the prompt together, with their score and token cost."""

    items: list[ContextItem]
    tokens: int = 0
    score: float = 0.0
    sources: set[str] = field(default_factory=set)

    @property
    def kind(self) -> str:
        return "step" if self.items[0].kind in ("tool_call", "tool_result") else self.items[0].kind

    @property
    def newest_seq(self) -> int:
        return max(i.seq for i in self.items)

    @property
    def order(self) -> tuple[float, int]:
        """Chronological position: a summary sits where the steps it covers were."""
        first = self.items[0]
        return (first.created_at, first.seq)


def build_units(items: Iterable[ContextItem], cost: Callable[[ContextItem], int]) -> list[Unit]:
    """Group ``items`` into units (tool steps by ``call_id``), each item once, chronological inside."""
    units: dict[str, Unit] = {}
    ordered = sorted(items, key=lambda i: i.seq)
    steps = step_keys(i for i in ordered if i.kind in ("tool_call", "tool_result") and i.call_id)
    for item in ordered:
        key = steps.get(item.id, item.id)
        unit = units.get(key)
        if unit is None:
            units[key] = Unit([item], cost(item))
        else:
            unit.items.append(item)
            unit.tokens += cost(item)
    return list(units.values())


def score_units(
    units: list[Unit],
    weights: RankWeights,
    half_life: float,
    *,
    keyword: Mapping[int, float],
    semantic: Mapping[int, float],
    pinned: int | None,
) -> None:
    """Set each unit's ``score`` (see the module docstring).

    Args:
        keyword: seq -> bm25 relevance (higher is better) of the keyword hits.
        semantic: seq -> cosine similarity with the trigger.
        pinned: seq of the item whose unit is always kept (the newest message).
    """
    # Chronological rank (a summary ranks where the steps it covers were, not when it was written).
    items = sorted((i for u in units for i in u.items), key=lambda i: (i.created_at, i.seq), reverse=True)
    ranks = {i.seq: r for r, i in enumerate(items)}
    best = max(keyword.values(), default=0.0) or 1.0
    for unit in units:
        seqs = [i.seq for i in unit.items]
        if pinned is not None and pinned in seqs:
            unit.score = math.inf
            continue
        recency = 0.5 ** (min(ranks[s] for s in seqs) / half_life)
        importance = max(i.importance for i in unit.items)
        kw = max((keyword.get(s, 0.0) for s in seqs), default=0.0) / best
        sim = max((max(semantic.get(s, 0.0), 0.0) for s in seqs), default=0.0)
        unit.score = (
            weights.recency * recency + weights.importance * importance + weights.keyword * kw + weights.semantic * sim
        )
