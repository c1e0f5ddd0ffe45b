"""What a run leaves behind: its steps (each also an event on ``agent.<id>.cognitive``) and the answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loom.cognitive.llm.types import Usage

__all__ = ["Answer", "Step", "StepKind", "StopReason"]


class StepKind(StrEnum):
    THOUGHT = "thought"
    """What the model said on its way (text beside tool calls, a reasoning turn)."""
    TOOL_CALL = "tool_call"
    OBSERVATION = "observation"
    """A tool's result (or its failure, a denial, an unknown tool) as the model is shown it."""
    ANSWER = "answer"
    ERROR = "error"
    USAGE = "usage"
    """Tokens one model call took (and which provider answered)."""


class StopReason(StrEnum):
    FINAL_ANSWER = "final_answer"
    MAX_STEPS = "max_steps"
    MAX_TOKENS = "max_tokens"
    TIME_LIMIT = "time_limit"
    MODEL_ERROR = "model_error"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One thing that happened in a run. ``index`` orders the steps of a run."""

    run_id: str
    index: int
    kind: StepKind
    text: str = ""
    tool: str = ""
    args: dict[str, Any] | None = None
    call_id: str = ""
    ok: bool | None = None
    data: dict[str, Any] | None = None
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run_id": self.run_id, "index": self.index, "kind": str(self.kind), "ts": self.ts}
        if self.text:
            out["text"] = self.text
        if self.tool:
            out["tool"] = self.tool
        if self.args is not None:
            out["args"] = self.args
        if self.call_id:
            out["call_id"] = self.call_id
        if self.ok is not None:
            out["ok"] = self.ok
        if self.data:
            out["data"] = self.data
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """The outcome of :meth:`SimpleCognitiveLoop.run`.

    ``ok`` is true only for a final answer; a run ended by a budget keeps what it had (``text``
    may then be the last thought) and says why in ``stop_reason`` and ``error``.
    """

    run_id: str
    text: str
    steps: tuple[Step, ...]
    stop_reason: StopReason
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    elapsed_ms: float = 0.0
    model_calls: int = 0

    @property
    def ok(self) -> bool:
        return self.stop_reason is StopReason.FINAL_ANSWER

    @property
    def tool_calls(self) -> list[Step]:
        return [s for s in self.steps if s.kind is StepKind.TOOL_CALL]

    @property
    def observations(self) -> list[Step]:
        return [s for s in self.steps if s.kind is StepKind.OBSERVATION]

    @property
    def thoughts(self) -> list[Step]:
        return [s for s in self.steps if s.kind is StepKind.THOUGHT]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "text": self.text,
            "ok": self.ok,
            "stop_reason": str(self.stop_reason),
            "error": self.error,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "model_calls": self.model_calls,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "estimated": self.usage.estimated,
            },
            "steps": [s.to_dict() for s in self.steps],
        }

    def __str__(self) -> str:
        return self.text
