"""Reading answers: a streamed one chunk by chunk, a whole one at once, and counting tokens when
the endpoint does not.

Streamed tool calls are merged by their ``index``. A call's ``id`` and function name are set
once and never appended to, because llama.cpp's server repeats the name in every delta (appending
gives ``get_weatherget_weather...``; ``openai``'s own stream helper falls for it too); only the
arguments are concatenated. A stream that ends without a ``finish_reason`` is not an answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.cognitive.llm.types import Message, ToolCall, Usage
from loom.context.tokens import estimate_tokens

__all__ = ["StreamAccumulator", "estimate_usage", "parse_completion", "prepare_messages", "prompt_chars"]


def prepare_messages(messages: Sequence[Message], tool_call_content: str | None) -> list[Message]:
    """Copies of ``messages`` ready to send: assistant tool-call messages whose ``content`` is
    ``None`` get ``tool_call_content`` (llama.cpp's server answers HTTP 500 to ``null`` there)."""
    out: list[Message] = []
    for msg in messages:
        if not isinstance(msg, Mapping) or "role" not in msg:
            raise TypeError(f"each message must be a mapping with a 'role', got {msg!r:.100}")
        m = dict(msg)
        if m["role"] == "assistant" and m.get("tool_calls") and m.get("content") is None:
            m["content"] = tool_call_content
        out.append(m)
    return out


def _chars(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    return len(json.dumps(value, ensure_ascii=False, default=str))


def _content_chars(content: Any) -> int:
    if isinstance(content, list):  # multi-part content: the text parts (an image's base64 is not text tokens)
        return sum(len(p.get("text") or "") for p in content if isinstance(p, Mapping))
    return _chars(content)


def estimate_usage(
    messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None, text: str, calls: Sequence[ToolCall]
) -> Usage:
    """About one token per four characters of what was sent (contents, tool calls, tool schemas)
    and of what came back; ``estimated=True`` says so to anyone adding it up."""
    got = len(text) + sum(len(c.name) + len(c.arguments) for c in calls)
    return Usage(max(1, estimate_tokens(prompt_chars(messages, tools))), estimate_tokens(got), estimated=True)


def prompt_chars(messages: Sequence[Message] | None, tools: Sequence[Mapping[str, Any]] | None = None) -> int:
    """Characters of what a request sends: message contents, tool calls, tool schemas."""
    sent = sum(_content_chars(m.get("content")) + _chars(m.get("tool_calls")) for m in messages or ())
    return sent + (_chars(list(tools)) if tools else 0)


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    prompt = getattr(raw, "prompt_tokens", None)
    completion = getattr(raw, "completion_tokens", None)
    if prompt is None and completion is None:
        return None
    return Usage(int(prompt or 0), int(completion or 0))


def _call_id(raw: str | None) -> str:
    return raw or f"call_{uuid.uuid4().hex[:12]}"  # some servers leave ids out; tool results need one


def parse_completion(completion: Any) -> tuple[str, tuple[ToolCall, ...], str | None, Usage | None, str]:
    """``(text, tool_calls, finish_reason, usage or None, model)`` of a non-streamed answer.

    Raises:
        ValueError: the answer has no choices.
    """
    choices = getattr(completion, "choices", None) or []
    if not choices:
        raise ValueError("the answer has no choices")
    choice = choices[0]
    message = choice.message
    calls: list[ToolCall] = []
    for tc in getattr(message, "tool_calls", None) or []:
        fn = getattr(tc, "function", None)
        if fn is None:  # a non-function ("custom") tool call: nothing the loop could run
            continue
        calls.append(ToolCall(_call_id(tc.id), fn.name or "", fn.arguments or ""))
    model = getattr(completion, "model", "") or ""
    return message.content or "", tuple(calls), choice.finish_reason, _usage(completion.usage), model


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StreamAccumulator:
    """Folds ``ChatCompletionChunk``s into one answer; :meth:`feed` returns the text fragment to emit."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""
    chunks: int = 0

    def feed(self, chunk: Any) -> str:
        self.chunks += 1
        self.model = self.model or getattr(chunk, "model", "") or ""
        usage = _usage(getattr(chunk, "usage", None))
        if usage is not None:
            self.usage = usage
        fragment = ""
        for choice in getattr(chunk, "choices", None) or []:
            if getattr(choice, "index", 0) != 0:
                continue  # n > 1 is never asked for; ignore anything else
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    fragment += delta.content
                for tc in delta.tool_calls or []:
                    self._merge(tc)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        if fragment:
            self.text.append(fragment)
        return fragment

    def _merge(self, tc: Any) -> None:
        index = tc.index
        if index is None:  # a server that omits the index: a new id opens a call, otherwise continue the last
            index = max(self.calls, default=-1) + (1 if tc.id or not self.calls else 0)
        part = self.calls.setdefault(index, _PartialCall())
        if tc.id and not part.id:
            part.id = tc.id
        fn = tc.function
        if fn is not None:
            if fn.name and not part.name:
                part.name = fn.name  # set once: a repeated name is not appended
            if fn.arguments:
                part.arguments.append(fn.arguments)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(_call_id(p.id), p.name, "".join(p.arguments)) for _, p in sorted(self.calls.items()))

    def joined(self) -> str:
        return "".join(self.text)
