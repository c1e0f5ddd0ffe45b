"""CognitiveAgent: a thinking loop as an agent that answers the events reaching it.

Two ways in, one behaviour:

* the SDK: ``Agent("assistant", topics=["ask.*"], behavior=CognitiveAgent(loop))`` — it answers
  ``ctx.request``s, thread messages and plain events; steps stream on ``agent.<id>.cognitive``;
* the agent core: ``await rt.agents.create("assistant", CognitiveAgent(loop), topics=[...])`` —
  the answer goes back as an emit action.

Each event is a goal: its ``goal`` metadata, else a JSON payload's ``goal``/``question``/``prompt``/
``text``/``query``, else the payload text. An event that came from an agent (it carries ``reply_to``)
gets the answer back with its correlation id; a failed run is answered with ``status=error``.
Routing metadata (``privacy``, ``latency_budget_ms``, ``cost_cap``, ``quality_floor``) is passed to
the model router when the loop thinks through one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from loom.cognitive.loop import SimpleCognitiveLoop
from loom.cognitive.steps import Answer
from loom.collab.collaborator import make_event
from loom.errors import UsageError
from loom.events.envelope import Envelope

if TYPE_CHECKING:
    from loom.agents.behavior import Action, AgentConfig
    from loom.agents.state import AgentState
    from loom.events.event import Event
    from loom.sdk.agent import Agent
    from loom.sdk.context import Context

__all__ = ["CognitiveAgent", "goal_of"]

_GOAL_KEYS = ("goal", "question", "prompt", "text", "query", "message", "task")
_ROUTING_KEYS = ("privacy", "latency_budget_ms", "cost_cap", "quality_floor")


def goal_of(event: Event) -> str:
    """The goal an event carries (see the module docs); ``""`` when it carries none."""
    md = event.metadata
    if md.get("goal"):
        return md["goal"]
    text = event.payload.decode("utf-8", errors="replace").strip()
    if text[:1] in ("{", '"'):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            for key in _GOAL_KEYS:
                if isinstance(value.get(key), str) and value[key].strip():
                    return value[key]
    return text


class CognitiveAgent:
    """Adapts a :class:`SimpleCognitiveLoop` to an agent (SDK handler and core behaviour).

    Args:
        loop: the loop that thinks; it is bound to the agent's id and link when the agent starts.
        reply: answer events that came from an agent (they carry ``reply_to``).
    """

    def __init__(self, loop: SimpleCognitiveLoop, *, reply: bool = True) -> None:
        if not isinstance(loop, SimpleCognitiveLoop):
            raise UsageError(f"CognitiveAgent needs a SimpleCognitiveLoop, got {loop!r}")
        self.loop = loop
        self.reply = reply
        self.last_answer: Answer | None = None
        self.answered = 0
        self.failed = 0

    # -- SDK: Agent(..., behavior=CognitiveAgent(loop)) --------------------------------------
    def attach(self, agent: Agent) -> None:
        """Called by :class:`loom.Agent` when it starts: steps are published through its link."""
        self.loop.bind(agent.agent_id, agent.core.link)

    async def __call__(self, ctx: Context, topic: str, event: Event) -> None:
        if event.metadata.get("sender") == f"agent.{ctx.agent_id}":
            return  # its own step or answer events coming back on a wide subscription
        if self.loop.agent_id != ctx.agent_id or self.loop.events is None:  # an event raced attach()
            self.loop.bind(ctx.agent_id, ctx._core().link)
        answer = await self._think(event)
        if answer is None or not self._wants_reply(event):
            return
        thread = ctx.thread(event)
        if answer.ok:
            await ctx.reply(thread, _reply_body(answer))
        else:
            await ctx.reply(thread, _reply_body(answer), error=answer.error or str(answer.stop_reason))

    # -- agent core: rt.agents.create(id, CognitiveAgent(loop)) -----------------------------
    def on_init(self, config: AgentConfig) -> None:
        self.loop.bind(config.agent_id, self.loop.events)

    async def on_event(self, event: Event, state: AgentState) -> list[Action] | None:
        from loom.agents.behavior import Action

        if event.metadata.get("sender") == f"agent.{self.loop.agent_id}":
            return None
        answer = await self._think(event)
        if answer is None or not self._wants_reply(event):
            return None
        src = Envelope.from_event(event)
        md: dict[str, str] = {}
        if not answer.ok:
            md["status"], md["error"] = "error", answer.error or str(answer.stop_reason)
        me = self.loop.agent_id
        Envelope(src.thread_id, src.correlation_id, "", f"agent.{me}.replies", src.ttl, src.hop).apply_to(md)
        kind = "collab.reply" if event.type == "collab.request" else "cognitive.answer"
        reply = make_event(kind, _reply_body(answer), source=f"agent.{me}", metadata=md)
        return [Action.emit(src.reply_to, reply)]

    def on_shutdown(self) -> None:
        return None

    # -- shared ----------------------------------------------------------------------------
    def _wants_reply(self, event: Event) -> bool:
        md = event.metadata
        return self.reply and bool(md.get("reply_to") or md.get("loom.reply_to"))

    async def _think(self, event: Event) -> Answer | None:
        goal = goal_of(event)
        if not goal:
            return None
        request = None
        md = event.metadata
        if any(k in md for k in _ROUTING_KEYS):
            from loom.cognitive.llm.router import RoutingRequest

            request = RoutingRequest.from_metadata(md)
        answer = await self.loop.run(goal, request=request)
        self.last_answer = answer
        if answer.ok:
            self.answered += 1
        else:
            self.failed += 1
        return answer


def _reply_body(answer: Answer) -> dict[str, Any]:
    return {
        "answer": answer.text,
        "ok": answer.ok,
        "stop_reason": str(answer.stop_reason),
        "run_id": answer.run_id,
        "model_calls": answer.model_calls,
        "tokens": answer.usage.total_tokens,
    }
