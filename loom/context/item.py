"""ContextItem: one thing an agent saw or did, as stored and as a prompt may show it.

An item keeps two faces: ``text`` is what a prompt shows (reduced, previewed, offloaded),
``data`` the JSON-able original. Its ``tokens`` are counted once, when it is written, by the
tokenizer named in ``tokenizer``, so building a prompt never re-tokenizes history.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal

from loom.errors import UsageError

__all__ = [
    "KINDS",
    "ROLES",
    "ContextItem",
    "ItemKind",
    "Role",
    "check_importance",
    "check_text",
    "new_item_id",
]

ItemKind = Literal["message", "tool_call", "tool_result", "observation", "summary"]
Role = Literal["user", "assistant", "system"]

KINDS: frozenset[str] = frozenset({"message", "tool_call", "tool_result", "observation", "summary"})
ROLES: frozenset[str] = frozenset({"user", "assistant", "system"})


def new_item_id() -> str:
    """A unique id (``ctx_`` + 20 hex digits). Order comes from the store's sequence, not from ids."""
    return f"ctx_{uuid.uuid4().hex[:20]}"


def check_text(what: str, text: object) -> str:
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a str, got {type(text).__name__}")
    return text


def check_importance(importance: object) -> float:
    if isinstance(importance, bool) or not isinstance(importance, int | float) or not math.isfinite(importance):
        raise UsageError(f"importance must be a number within 0..1, got {importance!r}")
    if not 0.0 <= importance <= 1.0:
        raise UsageError(f"importance must be within 0..1, got {importance!r}")
    return float(importance)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextItem:
    """One stored piece of an agent's context.

    Attributes:
        id: unique id (``ctx_…``).
        session, agent_id: whose context it belongs to.
        kind: ``message``, ``tool_call``, ``tool_result``, ``observation`` or ``summary``.
        role: ``user`` / ``assistant`` / ``system`` for messages, else ``None``.
        name: the tool (tool steps), the source (observations), ``None`` otherwise.
        text: what a prompt shows for it (tool arguments reduced, large outputs replaced by a
            preview and a file reference).
        data: the JSON-able original where ``text`` is not it: tool arguments, a tool result
            small enough to keep inline, where an offloaded result is, what a summary covers
            (``None`` for messages and observations, whose text is the original).
        ok: a tool result's success (``None`` for other kinds).
        call_id: links a tool result to its call.
        importance: 0..1; a ranking input and the importance floor's subject.
        created_at: epoch seconds.
        tokens: ``text``'s token count, counted once at write time.
        tokenizer: the tokenizer that counted ``tokens``.
        offload_ref: the file holding the full output when it was offloaded.
        compacted_into: the summary item that replaced it (compacted items are no longer retrieved).
        seq: the store's sequence number (write order); 0 before the item is stored.
    """

    id: str
    session: str
    agent_id: str
    kind: ItemKind
    text: str
    role: Role | None = None
    name: str | None = None
    data: Any = None
    ok: bool | None = None
    call_id: str | None = None
    importance: float = 0.5
    created_at: float = 0.0
    tokens: int = 0
    tokenizer: str = ""
    offload_ref: str | None = None
    compacted_into: str | None = None
    seq: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if self.role is not None and self.role not in ROLES:
            raise UsageError(f"role must be one of {sorted(ROLES)}, got {self.role!r}")
        check_text("text", self.text)
        check_importance(self.importance)

    @classmethod
    def new(cls, session: str, agent_id: str, kind: ItemKind, text: str, **fields: Any) -> ContextItem:
        """A fresh item stamped with a new id and the current time (not stored yet)."""
        return cls(
            id=new_item_id(), session=session, agent_id=agent_id, kind=kind, text=text, created_at=time.time(), **fields
        )

    def with_(self, **changes: Any) -> ContextItem:
        """A copy with ``changes`` applied (items are immutable)."""
        return replace(self, **changes)

    @property
    def label(self) -> str:
        """A short header for prompts and inspectors: ``user``, ``tool_result fs.read failed``…"""
        if self.kind == "message":
            return str(self.role)
        if self.kind == "tool_result":
            return f"tool_result {self.name} {'ok' if self.ok else 'failed'}"
        if self.kind in ("tool_call", "observation"):
            return f"{self.kind} {self.name}"
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (for inspectors and exports)."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}
