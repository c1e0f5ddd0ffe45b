"""The token window: which ranked units fit, and what is dropped and why.

The budget is ``max_tokens - reserve`` (the reserve is left for the response). System,
instructions and tool schemas are always kept: they are the agent's definition, and silently
cutting them would change what the agent is. What remains is filled greedily in score order; a
unit too large for what is left is dropped ("over window") and smaller ones after it may still
fit. If the fixed parts alone exceed the budget, nothing else is added and the bundle says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loom.context.ranking import Unit

__all__ = ["MESSAGE_OVERHEAD", "Dropped", "WindowFit", "fit_window"]

MESSAGE_OVERHEAD = 4
"""Tokens of framing per chat message (role and separators), as OpenAI's token-counting guide counts."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """An item left out of the prompt, and why."""

    id: str
    kind: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "kind": self.kind, "reason": self.reason}


@dataclass(slots=True)
class WindowFit:
    """The outcome of fitting: kept units (score order), dropped items, the budget used."""

    available: int
    kept: list[Unit] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    used: int = 0
    fits: bool = True
    note: str | None = None


def fit_window(units: list[Unit], *, max_tokens: int, reserve: int, fixed: int, memory_header: int) -> WindowFit:
    """Keep the best units that fit in ``max_tokens - reserve - fixed``.

    Args:
        units: scored units (any order).
        fixed: tokens of system + instructions + tools, always kept.
        memory_header: tokens of the memory block's heading, reserved when there is anything to
            put in memory (a few tokens held back even if every unit ends up a chat message).
    """
    budget = max_tokens - reserve
    available = budget - fixed - (memory_header if units else 0)
    out = WindowFit(available=available)
    if available <= 0:
        out.fits = fixed <= budget
        out.note = (
            f"system, instructions and tools take {fixed} tokens of the {budget} available "
            f"(window {max_tokens} - reserve {reserve}): "
            + ("they alone exceed it" if not out.fits else "no history fits")
        )
        reason = "over window (system, instructions and tools fill it)"
        out.dropped = [Dropped(i.id, i.kind, reason) for u in units for i in u.items]
        return out
    # Best first; between equal scores the newer unit wins.
    for unit in sorted(units, key=lambda u: (-u.score, -u.newest_seq)):
        if out.used + unit.tokens <= available:
            out.kept.append(unit)
            out.used += unit.tokens
        else:
            out.dropped.extend(Dropped(i.id, i.kind, "over window") for i in unit.items)
    return out
