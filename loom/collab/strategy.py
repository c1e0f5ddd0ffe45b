"""Fan-in strategies and the result records of the collaboration primitives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from loom.errors import LoomError, UsageError
from loom.events.event import Event

__all__ = [
    "Award",
    "BarrierResult",
    "CollabTimeout",
    "ContractNetResult",
    "FanoutResult",
    "Proposal",
    "RequestTimeout",
    "Strategy",
]

StrategyKind = Literal["any", "first_k", "majority", "all", "timeout"]


class CollabTimeout(LoomError, TimeoutError):
    """A collaboration step did not complete in time (raised only when asked; else a result says so).

    Attributes:
        primitive: ``request_reply``, ``fanout_fanin``, ``barrier`` or ``contract_net``.
        thread_id: the conversation.
        detail: what was missing.
    """

    def __init__(self, primitive: str, thread_id: str, detail: str) -> None:
        self.primitive = primitive
        self.thread_id = thread_id
        self.detail = detail
        super().__init__(f"{primitive} in thread {thread_id} timed out: {detail}")


class RequestTimeout(CollabTimeout):
    """A request got no reply in time (``raise_on_timeout=True``; otherwise the request returns ``None``)."""


@dataclass(frozen=True, slots=True)
class Strategy:
    """When a fan-out has collected enough.

    ``any``: one reply. ``first_k(k)``: k replies. ``majority``: more than half of the targets
    answered. ``all``: every target answered. ``timeout``: collect until the deadline.
    """

    kind: StrategyKind
    k: int = 0

    @classmethod
    def any(cls) -> Strategy:
        return cls("any", 1)

    @classmethod
    def first_k(cls, k: int) -> Strategy:
        if k.__class__ is not int or k < 1:
            raise UsageError(f"first_k needs k >= 1, got {k!r}")
        return cls("first_k", k)

    @classmethod
    def majority(cls) -> Strategy:
        return cls("majority")

    @classmethod
    def all(cls) -> Strategy:
        return cls("all")

    @classmethod
    def timeout(cls) -> Strategy:
        return cls("timeout")

    @classmethod
    def parse(cls, spec: Strategy | str | tuple[str, int]) -> Strategy:
        """Accept a Strategy, ``"any"``, ``"majority"``, ``"all"``, ``"timeout"``, ``"first_k:2"``, ``("first_k", 2)``.

        Raises:
            UsageError: anything else.
        """
        if isinstance(spec, Strategy):
            return spec
        if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "first_k":
            return cls.first_k(spec[1])
        if isinstance(spec, str):
            name, _, arg = spec.partition(":")
            if name == "first_k" and arg.isdigit():
                return cls.first_k(int(arg))
            if name in ("any", "majority", "all", "timeout") and not arg:
                return getattr(cls, name)()
        raise UsageError(f"unknown fan-in strategy {spec!r}; use 'any', 'first_k:K', 'majority', 'all' or 'timeout'")

    def done(self, replies: int, answered: int, targets: int) -> bool:
        """Whether collection can stop early."""
        if self.kind in ("any", "first_k"):
            return replies >= self.k
        if self.kind == "majority":
            return answered > targets // 2
        if self.kind == "all":
            return answered >= targets
        return False  # timeout: until the deadline

    def satisfied(self, replies: int, answered: int, targets: int) -> bool:
        """Whether the final collection meets the strategy (``timeout`` wants at least one reply)."""
        return self.done(replies, answered, targets) if self.kind != "timeout" else replies > 0

    def __str__(self) -> str:
        return f"first_k:{self.k}" if self.kind == "first_k" else self.kind


@dataclass(frozen=True, slots=True, kw_only=True)
class FanoutResult:
    """What a fan-out collected. ``responders[i]`` sent ``replies[i]``, which answered ``reply_topics[i]``."""

    thread_id: str
    strategy: Strategy
    targets: tuple[str, ...]
    replies: list[Event]
    responders: list[str]
    reply_topics: list[str]
    answered: tuple[str, ...]
    missing: tuple[str, ...]
    satisfied: bool
    elapsed_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BarrierResult:
    """``ok`` when enough parties arrived; else ``missing`` names who did not (when parties were named)."""

    name: str
    parties: int
    arrived: tuple[str, ...]
    missing: tuple[str, ...]
    ok: bool
    elapsed_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """A scored bid in a contract-net round. ``bidder`` is the proposal's sender."""

    bidder: str
    score: float
    event: Event


@dataclass(frozen=True, slots=True, kw_only=True)
class Award:
    """One award and how its execution went: ``ok``, ``error`` or ``timeout``."""

    bidder: str
    score: float
    status: Literal["ok", "error", "timeout"]
    result: Event | None = None
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractNetResult:
    """A contract-net round: ranked proposals, every award made, and the successful ones."""

    thread_id: str
    proposals: list[Proposal]
    awards: list[Award]
    rejected: tuple[str, ...]
    satisfied: bool
    elapsed_s: float
    winners: list[Award] = field(default_factory=list)
