"""What each thinking strategy tells the model, and how a chain of thought's answer is found.

ReAct uses the endpoint's native function calling (tools in the request, ``tool_calls`` in the
answer): no JSON is scraped out of prose, so a tool call is either well-formed or an observation
saying what was wrong with it. Chain of thought has no tools; it ends with ``FINAL ANSWER:``.
"""

from __future__ import annotations

import re

from loom.cognitive.config import ThinkingStrategy

__all__ = ["DEFAULT_SYSTEM", "continue_prompt", "instructions_for", "split_final_answer"]

DEFAULT_SYSTEM = (
    "You are a helpful assistant running inside Loom, an event-driven agent runtime. Be concise and precise."
)

_INSTRUCTIONS = {
    ThinkingStrategy.SINGLE_SHOT: "Answer the user's request directly.",
    ThinkingStrategy.REACT: (
        "Work step by step. When a tool can give you a fact or do something you cannot, call it; "
        "you may call several tools at once when they do not depend on each other. "
        "Read each tool result before deciding the next step. A result starting with ERROR or DENIED "
        "tells you the call failed: change your approach instead of repeating it. "
        "When you have what you need, answer the user in plain text without calling a tool."
    ),
    ThinkingStrategy.CHAIN_OF_THOUGHT: (
        "Reason step by step, one short step per turn. "
        "When you are sure, write a last line 'FINAL ANSWER: ' followed by the answer."
    ),
}

_FINAL = re.compile(r"final\s+answer\s*:", re.IGNORECASE)


def instructions_for(strategy: ThinkingStrategy) -> str:
    return _INSTRUCTIONS[strategy]


def continue_prompt(last: bool) -> str:
    """The user turn between two chain-of-thought steps."""
    if last:
        return "Now give your answer as a line 'FINAL ANSWER: <answer>'."
    return "Continue with the next step, or give 'FINAL ANSWER: <answer>' if you are sure."


def split_final_answer(text: str) -> tuple[str, str | None]:
    """``(reasoning, answer)``: the answer after the last ``FINAL ANSWER:`` marker, or ``None`` without one."""
    marks = list(_FINAL.finditer(text))
    if not marks:
        return text.strip(), None
    m = marks[-1]
    return text[: m.start()].strip(), text[m.end() :].strip()
