"""SimpleCognitiveLoop: perceive → think → act, with the context engineering of ``loom.context``.

One run takes a goal, records it in the agent's context, builds the prompt bundle from it
(retrieval, ranking, token window), then calls the model as the strategy says — acting on the
tool calls it asks for — until a final answer or a budget (steps, tokens, wall clock) ends it.
Each step is kept in the answer and, when someone listens, published on ``agent.<id>.cognitive``
(tokens on ``agent.<id>.tokens``), so inspectors and recordings can replay the reasoning.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from loom.cognitive.config import CognitiveConfig, ThinkingStrategy
from loom.cognitive.llm.types import ChatModel, LLMError, LLMResponse, Message, TokenSink, Usage
from loom.cognitive.steps import Answer, Step, StepKind, StopReason
from loom.cognitive.strategies import DEFAULT_SYSTEM, continue_prompt, instructions_for, split_final_answer
from loom.cognitive.toolbelt import ToolBelt, observation_payload
from loom.errors import UsageError
from loom.events.event import Event, new_event_id
from loom.telemetry.seam import Instruments

if TYPE_CHECKING:
    from loom.context import AgentContext, PromptBundle
    from loom.tools.registry import ToolRegistry

__all__ = ["EventSink", "SimpleCognitiveLoop"]


class EventSink(Protocol):
    """Where step events go: anything with the runtime's ``instruments`` (``rt.bus``, an agent's
    link), or the :class:`~loom.telemetry.Instruments` themselves."""

    instruments: Instruments


def _instruments(events: Any) -> Instruments | None:
    if events is None or isinstance(events, Instruments):
        return events
    inst = getattr(events, "instruments", None)
    if not isinstance(inst, Instruments):
        raise UsageError(f"events must be rt.bus, rt.instruments or an agent's link, got {events!r}")
    return inst


class _RunEnded(Exception):  # noqa: N818 - internal control flow, never escapes run()
    def __init__(self, reason: StopReason, message: str) -> None:
        self.reason = reason
        self.message = message


class SimpleCognitiveLoop:
    """A thinking loop over a model (an :class:`LLMClient` or a :class:`ModelRouter`) and tools.

    Args:
        config: strategy and budgets (ReAct with default budgets when ``None``).
        llm: anything with ``chat(...)`` (:class:`~loom.cognitive.llm.types.ChatModel`).
        tools: the :class:`~loom.ToolRegistry` whose tools the model may call (``rt.tools``);
            ``None``: no tools.
        agent_id: whose steps these are (a :class:`CognitiveAgent` sets its own).
        events: where steps are published (``rt.bus`` or ``rt.instruments``; a :class:`CognitiveAgent`
            uses its link): notes on ``agent.<id>.cognitive``, and a ``cognitive.run`` span per run.
    """

    def __init__(
        self,
        config: CognitiveConfig | None,
        llm: ChatModel,
        tools: ToolRegistry | None = None,
        *,
        agent_id: str = "assistant",
        events: EventSink | None = None,
    ) -> None:
        if not callable(getattr(llm, "chat", None)):
            raise UsageError(f"llm must have an async chat(...) (an LLMClient or a ModelRouter), got {llm!r}")
        self.config = config or CognitiveConfig()
        self.llm = llm
        self.belt = ToolBelt(tools, self.config)
        self.agent_id = agent_id
        self.instruments = _instruments(events)
        self._context: AgentContext | None = None
        self._own_context = False  # made here (in memory): closed by release_own_context()
        self.last_bundle: PromptBundle | None = None
        """The prompt bundle of the latest run (what the ContextInspector shows)."""
        self.runs = 0

    # -- wiring --------------------------------------------------------------------------
    def with_context(self, context: AgentContext) -> SimpleCognitiveLoop:
        """Use ``context`` (e.g. ``AgentContext.with_defaults(session, agent_id)``: SQLite, survives restarts)."""
        if not callable(getattr(context, "get_context", None)):
            raise UsageError(f"with_context needs a loom.context.AgentContext, got {context!r}")
        self._context = context
        self._own_context = False
        return self

    @property
    def context(self) -> AgentContext:
        """The agent's context; an in-memory one unless :meth:`with_context` gave another."""
        if self._context is None:
            from loom.context import AgentContext

            self._context = AgentContext(f"mem-{new_event_id()}", self.agent_id)
            self._own_context = True
        return self._context

    def bind(self, agent_id: str, events: EventSink | Instruments | None) -> None:
        """Publish as ``agent_id`` through ``events`` (called by :class:`CognitiveAgent` when it starts)."""
        self.agent_id = agent_id
        self.instruments = _instruments(events)

    async def aclose(self) -> None:
        """Close the context this loop made or was given (the model is the caller's to close)."""
        context, self._context = self._context, None
        if context is not None:
            await context.aclose()

    async def release_own_context(self) -> None:
        """Close the in-memory context the loop made itself, if any (its agent stopped); a context
        given with :meth:`with_context` stays open. The next run starts a fresh one."""
        if self._own_context:
            self._own_context = False
            await self.aclose()

    # -- a run ---------------------------------------------------------------------------
    async def run(
        self,
        goal: str,
        *,
        on_token: TokenSink | None = None,
        on_step: Callable[[Step], Any] | None = None,
        request: Any = None,
    ) -> Answer:
        """Think about ``goal`` until a final answer or a budget ends the run.

        Args:
            on_token: called with each text fragment as the model streams it.
            on_step: called with each :class:`Step` as it happens.
            request: a :class:`~loom.cognitive.llm.router.RoutingRequest` (privacy, latency, cost,
                quality) when ``llm`` is a router.

        Returns:
            The :class:`Answer`: ``ok`` for a final answer; otherwise ``stop_reason`` and
            ``error`` say which budget ended it (a model failure is ``model_error``).

        Raises:
            UsageError: ``goal`` is not a non-empty str.
        """
        if not isinstance(goal, str) or not goal.strip():
            raise UsageError(f"goal must be a non-empty str, got {goal!r}")
        run = _Run(self, on_token, on_step, request)
        self.runs += 1
        inst = self.instruments
        if inst is None or inst.tracer is None:
            return await run.execute(goal)
        attrs = {"loom.agent": self.agent_id, "loom.component": "cognitive", "loom.cognitive.run_id": run.id}
        with inst.span("cognitive.run", attrs) as span:
            answer = await run.execute(goal)
            span.set("loom.cognitive.stop_reason", str(answer.stop_reason))
            span.set("loom.cognitive.steps", len(run.steps))
            if not answer.ok:
                span.fail(answer.error or str(answer.stop_reason))
            return answer


class _Run:
    """The state of one run (steps, usage, budgets). Runs of one loop share its context: run them one
    at a time (a CognitiveAgent does: one event at a time), or give each its own loop."""

    def __init__(self, loop: SimpleCognitiveLoop, on_token: TokenSink | None, on_step: Any, request: Any) -> None:
        self.loop = loop
        self.config = loop.config
        self.id = new_event_id()
        self.steps: list[Step] = []
        self.usage = Usage()
        self.calls = 0
        self.on_step = on_step
        self.user_token = on_token
        self.request = request
        self.sender = f"agent.{loop.agent_id}"
        self.topic = f"agent.{loop.agent_id}.cognitive"
        self.token_topic = f"agent.{loop.agent_id}.tokens"
        self.last_text = ""

    # -- events ----------------------------------------------------------------------------
    def _watched(self, topic: str) -> bool:
        inst = self.loop.instruments
        return inst is not None and inst.watched(topic)

    def step(self, kind: StepKind, **fields: Any) -> Step:
        s = Step(run_id=self.id, index=len(self.steps), kind=kind, **fields)
        self.steps.append(s)
        if self.on_step is not None:
            self.on_step(s)
        if self._watched(self.topic):
            body = s.to_dict()
            body["agent_id"] = self.loop.agent_id
            event = Event(
                f"cognitive.{kind}",
                json.dumps(body, ensure_ascii=False, default=str).encode(),
                source=self.sender,
                metadata={"run_id": self.id, "sender": self.sender},
            )
            self.loop.instruments.note(self.topic, event)  # type: ignore[union-attr]
        return s

    def token(self, fragment: str) -> None:
        if self.user_token is not None:
            self.user_token(fragment)
        if self._watched(self.token_topic):
            event = Event(
                "cognitive.token",
                fragment.encode(),
                source=self.sender,
                metadata={"run_id": self.id, "sender": self.sender},
            )
            self.loop.instruments.note(self.token_topic, event)  # type: ignore[union-attr]

    # -- the model -------------------------------------------------------------------------
    async def think(self, messages: list[Message], tools: Sequence[dict[str, Any]] | None) -> LLMResponse:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "tools": tools or None,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_output_tokens,
            "on_token": self.token if cfg.stream else None,
        }
        llm = self.loop.llm
        if self.request is not None and getattr(llm, "routes_requests", False):
            kwargs["request"] = self.request
        try:
            response = await llm.chat(messages, **kwargs)
        except LLMError as exc:
            raise _RunEnded(StopReason.MODEL_ERROR, str(exc)) from exc
        self.calls += 1
        self.usage = self.usage + response.usage
        self.step(
            StepKind.USAGE,
            data={
                "prompt_tokens": response.usage.prompt_tokens,
                "completion_tokens": response.usage.completion_tokens,
                "estimated": response.usage.estimated,
                "provider": response.provider,
                "model": response.model,
                "latency_ms": round(response.latency_ms, 3),
                "run_tokens": self.usage.total_tokens,
            },
        )
        return response

    def over_tokens(self) -> bool:
        limit = self.config.max_tokens
        return limit is not None and self.usage.total_tokens > limit

    # -- the run ---------------------------------------------------------------------------
    async def execute(self, goal: str) -> Answer:
        started = time.perf_counter()
        cfg = self.config
        ctx = self.loop.context
        text, reason, error = "", StopReason.FINAL_ANSWER, None
        limit = asyncio.timeout(cfg.time_limit)
        try:
            async with limit:
                text = await self._strategy(ctx, goal)
        except _RunEnded as end:
            reason, error, text = end.reason, end.message, self.last_text
        except TimeoutError:
            if not limit.expired():  # not the run's own limit: a bug somewhere below, not a budget
                raise
            reason, text = StopReason.TIME_LIMIT, self.last_text
            error = f"the run took longer than its time limit of {cfg.time_limit:g} s"
        except asyncio.CancelledError:
            self.step(StepKind.ERROR, text="cancelled", data={"stop_reason": str(StopReason.CANCELLED)})
            raise
        if reason is StopReason.FINAL_ANSWER:
            self.step(StepKind.ANSWER, text=text)
            await ctx.record_message("assistant", text)
        else:
            self.step(StepKind.ERROR, text=error or str(reason), data={"stop_reason": str(reason)})
        return Answer(
            run_id=self.id,
            text=text,
            steps=tuple(self.steps),
            stop_reason=reason,
            usage=self.usage,
            error=error,
            elapsed_ms=(time.perf_counter() - started) * 1000,
            model_calls=self.calls,
        )

    async def _strategy(self, ctx: AgentContext, goal: str) -> str:
        cfg = self.config
        strategy = cfg.strategy
        if self.request is not None:  # refused before anything is recorded: a later run must not send it
            from loom.cognitive.llm.router_request import refusal

            why = refusal(self.loop.llm, self.request)
            if why is not None:
                raise _RunEnded(StopReason.MODEL_ERROR, why)
        tools = self.loop.belt.schemas() if strategy is ThinkingStrategy.REACT else []
        await ctx.record_message("user", goal)
        bundle = await ctx.get_context(
            goal,
            tools=tools,
            system=cfg.system_prompt or DEFAULT_SYSTEM,
            instructions=instructions_for(strategy),
            max_tokens=cfg.context_window,
        )
        self.loop.last_bundle = bundle
        messages = bundle.to_messages()
        if not messages or messages[-1].get("role") != "user" or messages[-1].get("content") != goal:
            messages.append({"role": "user", "content": goal})  # the goal is never left out of its own run
        if strategy is ThinkingStrategy.SINGLE_SHOT:
            return (await self.think(messages, None)).text
        if strategy is ThinkingStrategy.CHAIN_OF_THOUGHT:
            return await self._chain_of_thought(messages)
        return await self._react(ctx, messages, tools)

    async def _react(self, ctx: AgentContext, messages: list[Message], tools: list[dict[str, Any]]) -> str:
        cfg = self.config
        belt = self.loop.belt
        for step in range(cfg.max_steps):
            response = await self.think(messages, tools)
            if not response.tool_calls:
                return response.text
            if response.text:
                self.last_text = response.text
                self.step(StepKind.THOUGHT, text=response.text)
            if self.over_tokens():
                raise _RunEnded(StopReason.MAX_TOKENS, self._token_message())
            if step == cfg.max_steps - 1:  # nobody would read what these calls return
                raise _RunEnded(
                    StopReason.MAX_STEPS,
                    f"no final answer after {cfg.max_steps} model calls (max_steps={cfg.max_steps}); "
                    f"the last turn's {len(response.tool_calls)} tool call(s) were not made",
                )
            messages.append(response.assistant_message(None))  # the client sends what its server accepts
            for call in response.tool_calls:
                tool = belt.resolve(call.name) or call.name
                self.step(StepKind.TOOL_CALL, tool=tool, call_id=call.id, text=call.arguments)
            observations = await belt.call_all(response.tool_calls, agent_id=self.loop.agent_id, run_id=self.id)
            for call, obs in zip(response.tool_calls, observations, strict=True):
                name = obs.tool or (call.name or "").strip() or "?"  # the registry's name when the call resolved
                args = obs.args if obs.tool and obs.code != "INVALID_PARAMS" else _args_or_text(call.arguments)
                await ctx.record_tool_call(name, args, call_id=call.id)
                item = await ctx.record_tool_result(
                    name, obs.ok, obs.output if obs.ok else observation_payload(obs), call.id
                )
                shown = item.text if obs.ok else obs.text
                self.step(
                    StepKind.OBSERVATION, tool=obs.tool, call_id=obs.call_id, ok=obs.ok, text=shown, args=obs.args
                )
                messages.append({"role": "tool", "tool_call_id": obs.call_id, "content": shown})
        raise AssertionError("unreachable")  # pragma: no cover - the last step ends the run above

    async def _chain_of_thought(self, messages: list[Message]) -> str:
        steps = self.config.max_steps
        for i in range(steps):
            response = await self.think(messages, None)
            reasoning, answer = split_final_answer(response.text)
            if reasoning:
                self.last_text = reasoning
                self.step(StepKind.THOUGHT, text=reasoning)
            if answer is not None:
                return answer
            if i == steps - 1:
                return response.text.strip()  # asked for the answer on this last turn: this is it
            if self.over_tokens():
                raise _RunEnded(StopReason.MAX_TOKENS, self._token_message())
            messages.append({"role": "assistant", "content": response.text})
            messages.append({"role": "user", "content": continue_prompt(last=i == steps - 2)})
        raise AssertionError("unreachable")  # pragma: no cover

    def _token_message(self) -> str:
        return f"the run used {self.usage.total_tokens} tokens, over its budget of {self.config.max_tokens}"


def _args_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {"unparsed": arguments}
