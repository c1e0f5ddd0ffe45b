"""How a cognitive loop thinks: the strategy, its budgets, which tools it may use, who approves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loom.errors import UsageError

__all__ = ["DANGEROUS_TOOLS", "ApprovalRequest", "Approver", "CognitiveConfig", "ThinkingStrategy"]

DANGEROUS_TOOLS = frozenset({"fs.write", "shell.exec"})
"""Tools that change the world outside the runtime; a loop asks before calling them."""


class ThinkingStrategy(StrEnum):
    SINGLE_SHOT = "single_shot"
    """One model call, no tools: the answer is what the model says."""
    REACT = "react"
    """Thought → tool call(s) → observation, until the model answers without calling a tool."""
    CHAIN_OF_THOUGHT = "chain_of_thought"
    """Several reasoning turns without tools, ended by ``FINAL ANSWER:``."""


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A dangerous tool call waiting for a human (or a policy) to allow it."""

    agent_id: str
    run_id: str
    tool: str
    args: dict[str, Any]
    reason: str


Approver = Callable[[ApprovalRequest], "bool | Awaitable[bool]"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CognitiveConfig:
    """What a :class:`~loom.cognitive.SimpleCognitiveLoop` may do in one run.

    Args:
        strategy: how it thinks (see :class:`ThinkingStrategy`).
        system_prompt: the system part of every prompt (a sensible default otherwise).
        max_steps: model calls per run (ReAct, CoT); reaching it ends the run with ``max_steps``.
        max_tokens: prompt + completion tokens per run; passing it ends the run with ``max_tokens``.
        time_limit: seconds of wall clock per run; passing it ends the run with ``time_limit``.
        tools: tool names (or ``fnmatch`` patterns) the model is offered; ``None``: every tool
            of the registry except ``llm.*``.
        max_tools: at most this many tools are offered (OpenAI caps a request at 128).
        tool_timeout: seconds a tool call may take; a slow tool becomes a timeout observation.
        max_parallel_tools: tool calls of one turn that run at once.
        dangerous: more tools (names or ``fnmatch`` patterns such as ``"filesystem:*"``) that need
            approval, besides ``fs.write``, ``shell.exec``, any tool declared ``dangerous`` and any MCP
            tool with ``destructiveHint``.
        approve: called with an :class:`ApprovalRequest`; returns (or resolves to) True to allow.
            Without it dangerous calls are denied, and the model is told so.
        stream: stream tokens (to ``on_token`` and ``agent.<id>.tokens``); some servers cannot
            stream tool calls (llama.cpp with ``tool_choice="auto"``): set False for them.
        temperature, max_output_tokens: per model call.
        context_window: tokens the prompt bundle may take (the context's own default otherwise).
    """

    strategy: ThinkingStrategy = ThinkingStrategy.REACT
    system_prompt: str | None = None
    max_steps: int = 8
    max_tokens: int | None = None
    time_limit: float | None = 300.0
    tools: tuple[str, ...] | None = None
    max_tools: int = 64
    tool_timeout: float = 30.0
    max_parallel_tools: int = 8
    dangerous: frozenset[str] = field(default=DANGEROUS_TOOLS)
    approve: Approver | None = None
    stream: bool = True
    temperature: float | None = None
    max_output_tokens: int | None = None
    context_window: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", ThinkingStrategy(self.strategy))
        for name in ("max_steps", "max_tools", "max_parallel_tools"):
            v = getattr(self, name)
            if v.__class__ is not int or v < 1:
                raise UsageError(f"CognitiveConfig.{name} must be an int >= 1, got {v!r}")
        for name in ("max_tokens", "max_output_tokens", "context_window"):
            v = getattr(self, name)
            if v is not None and (v.__class__ is not int or v < 1):
                raise UsageError(f"CognitiveConfig.{name} must be an int >= 1 or None, got {v!r}")
        for name in ("time_limit", "tool_timeout"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v <= 0):
                raise UsageError(f"CognitiveConfig.{name} must be a positive number of seconds, got {v!r}")
        if self.tools is not None:
            if isinstance(self.tools, str):
                raise UsageError(f"CognitiveConfig.tools must be a list of names, not the string {self.tools!r}")
            object.__setattr__(self, "tools", tuple(self.tools))
        if isinstance(self.dangerous, str):
            raise UsageError(f"CognitiveConfig.dangerous must be a set of names, not the string {self.dangerous!r}")
        # added to the defaults, never instead of them: naming one more tool must not unguard fs.write
        object.__setattr__(self, "dangerous", DANGEROUS_TOOLS | frozenset(self.dangerous))
        if self.approve is not None and not callable(self.approve):
            raise UsageError(f"CognitiveConfig.approve must be callable, got {self.approve!r}")

    @classmethod
    def react(cls, **kw: Any) -> CognitiveConfig:
        return cls(strategy=ThinkingStrategy.REACT, **kw)

    @classmethod
    def single_shot(cls, **kw: Any) -> CognitiveConfig:
        return cls(strategy=ThinkingStrategy.SINGLE_SHOT, **kw)

    @classmethod
    def chain_of_thought(cls, **kw: Any) -> CognitiveConfig:
        kw.setdefault("max_steps", 4)
        return cls(strategy=ThinkingStrategy.CHAIN_OF_THOUGHT, **kw)
