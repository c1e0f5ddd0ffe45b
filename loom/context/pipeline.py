"""The retrieval pipeline behind ``get_context``: candidates → filters → ranking → window → bundle.

1. Candidates: the newest ``candidates`` items (recency); BM25 keyword hits for the trigger
   (all matches among those, plus the best ``keyword_hits`` older ones); with an embedder, the
   ``semantic_hits`` most similar items. Compacted items are never candidates.
2. Filters: kinds outside ``kinds`` and items below ``importance_floor`` are dropped with a reason
   (the newest message is exempt from the floor: the turn being answered is never filtered out).
3. Ranking (:mod:`loom.context.ranking`), then the window (:mod:`loom.context.window`), then the
   chat tail and memory block (:mod:`loom.context.bundle`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from loom.context.bundle import MEMORY_HEADER, PromptBundle, memory_line, render_history
from loom.context.config import ContextConfig
from loom.context.item import ContextItem
from loom.context.ranking import build_units, score_units
from loom.context.semantic import VectorIndex
from loom.context.store import ContextStore
from loom.context.window import MESSAGE_OVERHEAD, Dropped, fit_window

__all__ = ["TokenCounter", "build_bundle"]


class TokenCounter:
    """Counts texts that repeat from call to call (system, tool schemas, labels) once each.

    Item texts are never counted here: their counts are stored with them.
    """

    def __init__(self, count: Callable[[str], int], size: int = 256) -> None:
        self._count = count
        self._cache: dict[str, int] = {}
        self._size = size

    def __call__(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            if len(self._cache) >= self._size:
                self._cache.clear()  # a crude bound; these texts are few and cheap to recount
            n = self._cache[text] = self._count(text) if text else 0
        return n

    def count(self, text: str) -> int:
        """Count without caching (for item texts, which rarely repeat)."""
        return self._count(text)

    def label(self, label: str) -> int:
        """Tokens a memory line adds around an item's text (its ``[label] `` and newline)."""
        return self(memory_line(label, "")) + 1


def _item_cost(counter: TokenCounter) -> Callable[[ContextItem], int]:
    def cost(item: ContextItem) -> int:
        # A message may land in the chat tail or in memory: charge the dearer of the two.
        if item.kind == "message":
            return item.tokens + max(MESSAGE_OVERHEAD, counter.label(f"{item.role}, earlier"))
        return item.tokens + counter.label(item.label)

    return cost


async def build_bundle(
    *,
    store: ContextStore,
    session: str,
    agent_id: str,
    config: ContextConfig,
    counter: TokenCounter,
    tokenizer_name: str,
    vectors: VectorIndex | None,
    trigger: str,
    system: str,
    instructions: str,
    tools: Sequence[dict[str, Any]],
    max_tokens: int,
    new_summaries: Sequence[tuple[ContextItem, Sequence[ContextItem]]] = (),
    notes: Sequence[str] = (),
) -> PromptBundle:
    """Run the pipeline once (see the module docstring); compaction has already run."""
    recent = store.recent(session, agent_id, config.candidates)
    by_seq = {i.seq: i for i in recent}
    oldest_recent = min(by_seq, default=0)
    keyword: dict[int, float] = {}
    n_keyword = n_semantic = 0  # items brought in beyond the recent ones
    if trigger.strip() and config.weights.keyword > 0:
        terms = store.informative_terms(trigger)
        hits = store.keyword(session, agent_id, terms, len(recent), min_seq=oldest_recent)
        if config.keyword_hits and len(recent) == config.candidates:  # older history exists
            hits += store.keyword(session, agent_id, terms, config.keyword_hits, max_seq=oldest_recent - 1)
        keyword = dict(hits)
        for item in store.by_seq([s for s in keyword if s not in by_seq]):
            by_seq[item.seq] = item
            n_keyword += 1
    semantic: dict[int, float] = {}
    if vectors is not None and config.weights.semantic > 0:
        try:
            semantic = await vectors.similarities(trigger, config.semantic_hits, also=list(by_seq))
        except Exception as exc:  # noqa: BLE001 - retrieval goes on without similarity, and says so
            notes = [*notes, f"embedder {vectors.embedder.name} failed on the trigger ({type(exc).__name__}: {exc})"]
        for item in store.by_seq([s for s in semantic if s not in by_seq]):
            by_seq[item.seq] = item
            n_semantic += 1
        semantic = {s: v for s, v in semantic.items() if s in by_seq}

    dropped: list[Dropped] = []
    newest_message = max((i.seq for i in by_seq.values() if i.kind == "message"), default=None)
    kept_items: list[ContextItem] = []
    for item in by_seq.values():
        if item.kind not in config.kinds:
            dropped.append(Dropped(item.id, item.kind, "kind not retrieved"))
        elif item.importance < config.importance_floor and item.seq != newest_message:
            dropped.append(Dropped(item.id, item.kind, "below importance floor"))
        elif item.tokenizer != tokenizer_name:  # counted by another tokenizer (another process, another run)
            kept_items.append(item.with_(tokens=counter.count(item.text), tokenizer=tokenizer_name))
        else:
            kept_items.append(item)
    pinned = newest_message if any(i.seq == newest_message for i in kept_items) else None

    units = build_units(kept_items, _item_cost(counter))
    score_units(units, config.weights, config.recency_half_life, keyword=keyword, semantic=semantic, pinned=pinned)
    tools_json = json.dumps(list(tools), separators=(",", ":"), default=str) if tools else ""
    system_tokens = counter(system) + (MESSAGE_OVERHEAD if system or instructions else 0)
    fixed = {"system": system_tokens, "instructions": counter(instructions), "tools": counter(tools_json)}
    # the header line, and the framing of the system message that memory creates when nothing else does
    header = counter(MEMORY_HEADER) + (0 if system or instructions else MESSAGE_OVERHEAD)
    fit = fit_window(
        units, max_tokens=max_tokens, reserve=config.reserve, fixed=sum(fixed.values()), memory_header=header
    )
    dropped += fit.dropped

    message_units = [u for u in units if u.kind == "message"]
    memory, memory_ids, messages, message_ids, memory_tokens, message_tokens = render_history(
        fit.kept, message_units, counter.label, header
    )
    tokens = {**fixed, "memory": memory_tokens, "messages": message_tokens}
    tokens["total"] = sum(tokens.values())

    fresh = {s.id for s, _ in new_summaries}
    for summary, covered in new_summaries:
        dropped.extend(Dropped(i.id, i.kind, f"compacted into {summary.id}") for i in covered)
    compacted = [
        {
            "id": i.id,
            "covers": len((i.data or {}).get("covers", [])),
            "steps": (i.data or {}).get("steps", 0),
            "new": i.id in fresh,
            "included": i.id in memory_ids,
        }
        for i in sorted(by_seq.values(), key=lambda i: i.seq)
        if i.kind == "summary"
    ]
    compacted += [
        {"id": s.id, "covers": len(c), "steps": (s.data or {}).get("steps", 0), "new": True, "included": False}
        for s, c in new_summaries
        if s.seq not in by_seq
    ]
    all_notes = list(notes) + ([fit.note] if fit.note else [])
    return PromptBundle(
        trigger=trigger,
        system=system,
        instructions=instructions,
        memory=memory,
        messages=messages,
        tools=[dict(t) for t in tools],
        tokens=tokens,
        window=max_tokens,
        reserve=config.reserve,
        tokenizer=tokenizer_name,
        dropped=[d.to_dict() for d in dropped],
        compacted=compacted,
        retrieved={
            "recent": len(recent),
            "keyword": n_keyword,
            "semantic": n_semantic,
            "matched": len(keyword),
            "candidates": len(by_seq),
            "kept": len(memory_ids) + len(message_ids),
            "dropped": len(dropped),
        },
        included={"memory": memory_ids, "messages": message_ids},
        fits=fit.fits,
        notes=all_notes,
    )
