"""Compaction: tool steps older than the recent window become one summary item each batch.

A *step* is a tool call and its result (paired by ``call_id``; a lone call or result is a step
too). The newest ``keep_recent_steps`` steps stay in full; once at least ``compact_min_steps``
older steps are uncompacted, they are summarised (in batches of at most :data:`BATCH` steps) into
``summary`` items and marked ``compacted_into`` them, so they leave retrieval for good.

Unlike upstream's compactor, whose summaries lived only in the prompt being built, summaries are
stored items: they persist, rank, and are compacted away by nobody (their text is bounded).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from loom.context.config import ContextConfig
from loom.context.item import ContextItem
from loom.context.store import ContextStore

__all__ = [
    "BATCH",
    "Summarizer",
    "compact",
    "deterministic_summary",
    "plan_compaction",
    "step_key",
    "step_keys",
    "summary_data",
]

BATCH = 50
"""At most this many steps go into one summary (bounds the summary and the summariser's input)."""
_LINES = 20  # the deterministic summary lists this many steps, then counts the rest
_LINE_CHARS = 160

Summarizer = Callable[[Sequence[ContextItem]], Awaitable[str]]
"""``async (items) -> str``: the covered items (calls and results, oldest first) in, the summary text out."""


def step_key(item: ContextItem) -> str:
    return item.call_id or item.id


def step_keys(items: Iterable[ContextItem]) -> dict[str, str]:
    """Item id → the key of its tool step, for items oldest first. A call and its result pair by
    ``call_id``; a call whose id already has a result starts a new step, so a server that reuses
    ids across turns (some number them per answer) never merges two steps."""
    keys: dict[str, str] = {}
    latest: dict[str, tuple[str, bool]] = {}  # call id → (key of its latest step, whether it has a result)
    for item in items:
        cid = step_key(item)
        key, done = latest.get(cid, ("", False))
        if not key or (done and item.kind == "tool_call"):
            key, done = f"step:{cid}:{item.seq}", False
        latest[cid] = (key, done or item.kind == "tool_result")
        keys[item.id] = key
    return keys


def _steps(items: Sequence[ContextItem]) -> list[list[ContextItem]]:
    """Tool items (oldest first) grouped into steps, in the order each step started."""
    keys = step_keys(items)
    steps: dict[str, list[ContextItem]] = {}
    for item in items:
        steps.setdefault(keys[item.id], []).append(item)
    return list(steps.values())


def plan_compaction(tool_items: Sequence[ContextItem], keep: int, min_steps: int) -> list[list[ContextItem]]:
    """Batches of items to compact (each the items of up to :data:`BATCH` whole steps), or none.

    Args:
        tool_items: the uncompacted tool calls and results, oldest first.
        keep: the newest steps that stay in full.
        min_steps: compact only when at least this many older steps are waiting.
    """
    steps = _steps(tool_items)
    old = steps[: max(len(steps) - keep, 0)]
    if len(old) < min_steps:
        return []
    return [[item for step in old[i : i + BATCH] for item in step] for i in range(0, len(old), BATCH)]


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def summary_data(items: Sequence[ContextItem], summarizer: str) -> dict[str, Any]:
    """The summary item's ``data``: which items it covers and per-tool outcome counts."""
    tools: dict[str, dict[str, int]] = {}
    for item in items:
        counts = tools.setdefault(item.name or "?", {"calls": 0, "ok": 0, "failed": 0})
        if item.kind == "tool_call":
            counts["calls"] += 1
        else:
            counts["ok" if item.ok else "failed"] += 1
    return {
        "covers": [i.id for i in items],
        "steps": len(_steps(items)),
        "tools": tools,
        "summarizer": summarizer,
        "offloaded": sorted({i.offload_ref for i in items if i.offload_ref}),
    }


async def deterministic_summary(items: Sequence[ContextItem]) -> str:
    """The default summariser: per-tool counts, then one bounded line per step (oldest first).

    The same items always give the same text, so tests and replays can rely on it.
    """
    steps = _steps(items)
    data = summary_data(items, "deterministic")
    counts = "; ".join(
        f"{name} ×{max(c['calls'], c['ok'] + c['failed'])}: {c['ok']} ok, {c['failed']} failed"
        for name, c in data["tools"].items()
    )
    lines = [f"Earlier tool steps, compacted ({len(steps)}; {counts}):"]
    for step in steps[:_LINES]:
        call = next((i for i in step if i.kind == "tool_call"), None)
        result = next((i for i in step if i.kind == "tool_result"), None)
        name = (call or result or step[0]).name
        args = json.dumps(call.data, ensure_ascii=False, default=str) if call is not None else "…"
        head = _one_line(f"{name}({args})", _LINE_CHARS // 2)
        if result is None:
            lines.append(f"- {head} → no result recorded")
            continue
        outcome = "ok" if result.ok else "failed"
        preview, offloaded, reference = result.text.partition("\n[full output:")
        body = _one_line(preview, _LINE_CHARS - len(head))
        where = f" [full output:{reference}" if offloaded else ""  # keeps the path the model can read
        lines.append(f"- {head} → {outcome}: {body}{where}")
    if len(steps) > _LINES:
        lines.append(f"- … and {len(steps) - _LINES} more steps")
    return "\n".join(lines)


async def compact(
    store: ContextStore,
    session: str,
    agent_id: str,
    config: ContextConfig,
    count: Callable[[str], int],
    tokenizer: str,
    summarizer: Summarizer | None = None,
) -> tuple[list[tuple[ContextItem, list[ContextItem]]], list[str]]:
    """Compact what :func:`plan_compaction` says is due.

    A summariser that raises or returns no text does not lose the steps: the deterministic
    summary is used instead and a note says why.

    Returns:
        (stored summary, the items it covers) per batch, and notes for the bundle.
    """
    done: list[tuple[ContextItem, list[ContextItem]]] = []
    notes: list[str] = []
    for batch in plan_compaction(
        store.tool_items(session, agent_id), config.keep_recent_steps, config.compact_min_steps
    ):
        text, used = "", "deterministic"
        if summarizer is not None:
            try:
                text = await summarizer(batch)
                if not isinstance(text, str) or not text.strip():
                    raise TypeError(f"it returned {type(text).__name__} {str(text)[:40]!r}, not a non-empty str")
                used = getattr(summarizer, "__qualname__", type(summarizer).__name__)
            except Exception as exc:  # noqa: BLE001 - any summariser failure falls back, reported below
                notes.append(f"summariser failed ({type(exc).__name__}: {exc}); used the deterministic summary")
                text = ""
        if not text:
            text = await deterministic_summary(batch)
        summary = ContextItem.new(
            session,
            agent_id,
            "summary",
            text,
            name="tool steps",
            data=summary_data(batch, used),
            importance=config.default_importance("summary"),
            tokens=count(text),
            tokenizer=tokenizer,
        ).with_(created_at=max(i.created_at for i in batch))  # sits where the steps were
        stored = store.compact(summary, [i.id for i in batch])
        if stored is not None:  # None: another context on this store compacted them first
            done.append((stored, batch))
    return done, notes
