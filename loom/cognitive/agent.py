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
import logging
from typing import TYPE_CHECKING, Any

from loom.cognitive.llm.router_request import ROUTING_KEYS, RoutingRequest
from loom.cognitive.loop import EventSink, SimpleCognitiveLoop
from loom.cognitive.steps import Answer
from loom.collab.collaborator import make_reply
from loom.errors import UsageError
from loom.events.envelope import Envelope

if TYPE_CHECKING:
    from loom.agents.behavior import Action, AgentConfig
    from loom.agents.state import AgentState
    from loom.events.event import Event
    from loom.sdk.agent import Agent
    from loom.sdk.context import Context

__all__ = ["CognitiveAgent", "goal_of"]

log = logging.getLogger("loom.cognitive")

_GOAL_KEYS = ("goal", "question", "prompt", "text", "query", "message", "task")


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
        events: where steps go for an agent-core behaviour (``rt.bus``; the SDK path uses the agent's link).

    The loop (and the context it was given) stays the caller's: ``await loop.aclose()`` when done.
    An in-memory context the loop made itself is closed when the agent stops.
    """

    def __init__(self, loop: SimpleCognitiveLoop, *, reply: bool = True, events: EventSink | None = None) -> None:
        if not isinstance(loop, SimpleCognitiveLoop):
            raise UsageError(f"CognitiveAgent needs a SimpleCognitiveLoop, got {loop!r}")
        self.loop = loop
        self.reply = reply
        self.events = events
        self.last_answer: Answer | None = None
        self.answered = 0
        self.failed = 0

    # -- SDK: Agent(..., behavior=CognitiveAgent(loop)) --------------------------------------
    def attach(self, agent: Agent) -> None:
        """Called by :class:`loom.Agent` when it starts: steps are published through its link."""
        self.loop.bind(agent.agent_id, agent.core.link)

    async def __call__(self, ctx: Context, topic: str, event: Event) -> None:
        if _own(event, ctx.agent_id):
            return  # its own step, token or answer events coming back on a wide subscription
        if self.loop.agent_id != ctx.agent_id or self.loop.instruments is None:  # an event raced attach()
            self.loop.bind(ctx.agent_id, ctx._core().link)
        body, error = await self._think(event)
        if body is None or not self._wants_reply(event):
            return
        await ctx.reply(ctx.thread(event), body, error=error)

    # -- agent core: rt.agents.create(id, CognitiveAgent(loop)) -----------------------------
    def on_init(self, config: AgentConfig) -> None:
        self.loop.bind(config.agent_id, self.events or self.loop.instruments)

    async def on_event(self, event: Event, state: AgentState) -> list[Action] | None:
        from loom.agents.behavior import Action

        if _own(event, self.loop.agent_id):
            return None
        body, error = await self._think(event)
        if body is None or not self._wants_reply(event):
            return None
        src = Envelope.from_event(event)
        md = {"status": "error", "error": error} if error else {}
        reply, envelope = make_reply(event.type, src, self.loop.agent_id, body, metadata=md)
        envelope.apply_to(reply.metadata)
        return [Action.emit(src.reply_to, reply)]

    async def on_shutdown(self) -> None:
        await self.loop.release_own_context()

    async def detach(self) -> None:
        """Called by :class:`loom.Agent` when it stops."""
        await self.loop.release_own_context()

    # -- shared ----------------------------------------------------------------------------
    def _wants_reply(self, event: Event) -> bool:
        md = event.metadata
        return self.reply and bool(md.get("reply_to") or md.get("loom.reply_to"))

    async def _think(self, event: Event) -> tuple[dict[str, Any] | None, str | None]:
        """The reply body and error of thinking about ``event`` (``(None, None)``: no goal in it).

        Whatever goes wrong is an answer with ``status=error``, never a requester left waiting:
        bad routing metadata, a closed model, a context store that fails.
        """
        goal = goal_of(event)
        if not goal:
            return None, None
        try:
            md = event.metadata
            request = RoutingRequest.from_metadata(md) if any(k in md for k in ROUTING_KEYS) else None
            answer = await self.loop.run(goal, request=request)
        except Exception as exc:  # noqa: BLE001 - reported to the asker and counted, the agent goes on
            self.failed += 1
            log.warning("cognitive agent %s could not think about %s: %s", self.loop.agent_id, event.id, exc)
            return {"answer": "", "ok": False, "stop_reason": "error", "error": f"{type(exc).__name__}: {exc}"}, (
                f"{type(exc).__name__}: {exc}"
            )
        self.last_answer = answer
        if answer.ok:
            self.answered += 1
            return _reply_body(answer), None
        self.failed += 1
        return _reply_body(answer), answer.error or str(answer.stop_reason)


def _own(event: Event, agent_id: str) -> bool:
    """Not a goal: the agent's own events (steps, tokens, answers), other agents' steps, and the
    runtime's observability events (``tool.call``/``tool.result``, ``router.decisions``, lifecycle:
    source ``loom`` or ``loom.*``) that its own runs cause, so a wide subscription cannot feed itself."""
    me = f"agent.{agent_id}"
    source = event.source
    return (
        event.metadata.get("sender") == me
        or source == me
        or source == "loom"
        or source.startswith("loom.")
        or event.type.startswith("cognitive.")
    )


def _reply_body(answer: Answer) -> dict[str, Any]:
    return {
        "answer": answer.text,
        "ok": answer.ok,
        "stop_reason": str(answer.stop_reason),
        "run_id": answer.run_id,
        "model_calls": answer.model_calls,
        "tokens": answer.usage.total_tokens,
    }
