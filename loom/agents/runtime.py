"""AgentRuntime: agents as actors on the bus.

Each agent has one mailbox (a multi-pattern BATCHED subscription, 1000 by default) and one
task that handles its events one at a time, in order. The runtime applies the envelope rules
(``next_hop`` before the handler; expired events are dropped and counted), stamps
``sender = agent.<id>`` on what the agent emits, contains handler errors (logged, counted,
published on ``agent.<id>.error``) and moves an agent that keeps failing to ``failed``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import traceback
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from loom.agents.behavior import Action, AgentBehavior, AgentConfig
from loom.agents.directory import AgentDirectory, AgentInfo
from loom.agents.managed import AgentNotFound, AgentStatus, ManagedAgent, RestartPolicy
from loom.agents.state import AgentState, MemoryStateStore, StateStore
from loom.errors import LoomError, UsageError
from loom.events.envelope import Envelope, agent_reply_topic, hop_on
from loom.events.event import Event
from loom.events.qos import Overflow, QoS
from loom.events.topics import validate_pattern, validate_topic

if TYPE_CHECKING:
    from loom.runtime import Loom

__all__ = ["AgentNotFound", "AgentRuntime", "ManagedAgent", "RestartPolicy"]

log = logging.getLogger("loom.agents")


class AgentRuntime:
    """Creates, starts, stops and deletes agents. Owned by :class:`loom.Loom` as ``rt.agents``."""

    def __init__(self, loom: Loom, *, store: StateStore | None = None) -> None:
        self._loom = loom
        self._bus = loom.bus
        self.store: StateStore = store or MemoryStateStore()
        self.directory = AgentDirectory()
        self._agents: dict[str, ManagedAgent] = {}

    # -- mapping view --------------------------------------------------------------------
    def __getitem__(self, agent_id: str) -> ManagedAgent:
        try:
            return self._agents[agent_id]
        except KeyError:
            raise AgentNotFound(agent_id) from None

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def __iter__(self) -> Iterator[ManagedAgent]:
        return iter(list(self._agents.values()))

    def __len__(self) -> int:
        return len(self._agents)

    def get(self, agent_id: str) -> ManagedAgent | None:
        return self._agents.get(agent_id)

    # -- lifecycle -----------------------------------------------------------------------
    async def create(
        self,
        agent_id: str,
        behavior: AgentBehavior,
        *,
        topics: Iterable[str] = (),
        capabilities: Iterable[str] = (),
        parameters: Mapping[str, str] | None = None,
        agent_type: str = "agent",
        mailbox_size: int = 1000,
        mailbox_qos: QoS = QoS.BATCHED,
        restart: RestartPolicy | None = None,
        start: bool = False,
    ) -> ManagedAgent:
        """Register an agent (state ``created``); an existing agent with this id is replaced.

        Raises:
            UsageError: bad id, topics, behavior or options.
        """
        if not isinstance(agent_id, str) or not agent_id:
            raise UsageError(f"agent id must be a non-empty str, got {agent_id!r}")
        validate_topic(f"agent.{agent_id}.replies")  # the id must fit in a topic segment
        if "." in agent_id:
            raise UsageError(f"agent id {agent_id!r} must not contain '.' (it is one topic segment)")
        if not callable(getattr(behavior, "on_event", None)):
            raise UsageError(f"behavior for {agent_id!r} has no on_event method: {behavior!r}")
        topics = tuple(dict.fromkeys(topics))
        for t in topics:
            validate_pattern(t)
        if mailbox_size.__class__ is not int or mailbox_size < 1:
            raise UsageError(f"mailbox_size must be a positive int, got {mailbox_size!r}")
        if agent_id in self._agents:
            await self.delete(agent_id)
        config = AgentConfig(
            agent_id=agent_id,
            agent_type=agent_type,
            topics=topics,
            capabilities=tuple(capabilities),
            parameters=dict(parameters or {}),
        )
        state = AgentState(agent_id, self.store.load(agent_id))
        agent = ManagedAgent(
            config,
            behavior,
            state,
            mailbox_size=mailbox_size,
            mailbox_qos=QoS(mailbox_qos),
            restart=restart or RestartPolicy(),
        )
        self._agents[agent_id] = agent
        self.directory.register(
            AgentInfo(agent_id=agent_id, topics=tuple(agent.topics), capabilities=config.capabilities)
        )
        self._notify("agent.created", agent)
        if start:
            await self.start(agent_id)
        return agent

    async def start(self, agent_id: str) -> ManagedAgent:
        """Open the mailbox, run ``on_init``, start handling events (``running``). Idempotent while running.

        If ``on_init`` raises, the agent is ``failed`` (reported on ``agent.<id>.error``).

        Raises:
            AgentNotFound: unknown id.
        """
        agent = self[agent_id]
        if agent.status == "running":
            return agent
        agent.mailbox = self._bus.subscribe(
            agent.topics,
            qos=agent.mailbox_qos,
            maxsize=agent.mailbox_size,
            overflow=Overflow.DROP_NEWEST,
            intercept=agent._intercept,
            name=f"agent.{agent_id}",
        )
        agent.status = "running"
        agent._failures.clear()
        try:  # start means ready: on_init has run when start() returns (events meanwhile are queued)
            on_init = getattr(agent.behavior, "on_init", None)
            if on_init is not None:
                await _maybe_await(on_init(agent.config))
        except Exception as exc:  # noqa: BLE001 - on_init is user code: contained, reported
            self._record_failure(agent, "", None, exc, fatal=True)
            await self._halt(agent, "failed")
            return agent
        agent.task = self._loom.spawn(self._run(agent), name=f"loom.agents.run:{agent_id}")
        self.directory.update(agent_id, status="active")
        self._notify("agent.started", agent)
        return agent

    async def stop(self, agent_id: str) -> ManagedAgent:
        """Stop handling events (the current handler is cancelled), call ``on_shutdown``. Idempotent.

        Raises:
            AgentNotFound: unknown id.
        """
        agent = self[agent_id]
        if agent.status != "running":
            return agent
        await self._halt(agent, "stopped")
        return agent

    async def delete(self, agent_id: str) -> None:
        """Stop (if running), unregister and forget the agent. Its persistent state stays in the store.

        Raises:
            AgentNotFound: unknown id.
        """
        agent = self[agent_id]
        await self.stop(agent_id)
        del self._agents[agent_id]
        self.directory.unregister(agent_id)
        self._notify("agent.deleted", agent)

    async def aclose(self) -> None:
        """Stop every agent (each gets ``on_shutdown``)."""
        for agent in list(self._agents.values()):
            if agent.status == "running":
                await self._halt(agent, "stopped")

    async def _halt(self, agent: ManagedAgent, status: AgentStatus) -> None:
        agent.status = status
        if agent.mailbox is not None:
            agent.mailbox.close()
        task, agent.task = agent.task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for waiter in list(agent.pending):
            agent.forget_pending(waiter)
        try:
            on_shutdown = getattr(agent.behavior, "on_shutdown", None)
            if on_shutdown is not None:
                await _maybe_await(on_shutdown())
        except Exception as exc:  # contained: a broken on_shutdown must not break stop()
            log.exception("agent %s: on_shutdown failed", agent.id)
            agent.last_error = f"on_shutdown: {exc!r}"
        self._save_state(agent)
        self.directory.update(agent.id, status="inactive")
        self._notify(f"agent.{status}", agent)

    # -- dynamic subscriptions (reference §3.3) -----------------------------------------
    def subscribe(self, agent_id: str, pattern: str) -> None:
        """Add a topic pattern at run time.

        Raises:
            AgentNotFound: unknown agent. UsageError: already subscribed to exactly this pattern.
        """
        agent = self[agent_id]
        validate_pattern(pattern)
        if pattern in agent.topics:
            raise UsageError(f"agent {agent_id!r} is already subscribed to {pattern!r}")
        if agent.mailbox is not None and not agent.mailbox.closed:
            agent.mailbox.add_pattern(pattern)
        agent.topics.append(pattern)
        self.directory.update(agent_id, topics=tuple(agent.topics))

    def unsubscribe(self, agent_id: str, pattern: str) -> None:
        """Remove a topic pattern at run time.

        Raises:
            AgentNotFound: unknown agent. UsageError: not subscribed, or the private reply topic.
        """
        agent = self[agent_id]
        if pattern == agent_reply_topic(agent_id):
            raise UsageError(f"{pattern!r} is agent {agent_id!r}'s private reply topic and cannot be unsubscribed")
        if pattern not in agent.topics:
            raise UsageError(f"agent {agent_id!r} is not subscribed to {pattern!r}")
        if agent.mailbox is not None and not agent.mailbox.closed:
            agent.mailbox.remove_pattern(pattern)
        agent.topics.remove(pattern)
        self.directory.update(agent_id, topics=tuple(agent.topics))

    def subscriptions(self, agent_id: str) -> list[str]:
        """The agent's topic patterns (its reply topic first)."""
        return list(self[agent_id].topics)

    # -- emitting ------------------------------------------------------------------------
    def stamp(self, agent: ManagedAgent, event: Event, envelope: Envelope | None = None) -> Event:
        """``event`` carrying ``sender = agent.<id>`` (and ``envelope``, when given)."""
        md = dict(event.metadata)
        if envelope is None:
            envelope = Envelope.from_metadata(md, event.id)
            parent = agent.current
            if parent is not None and "ttl" not in md:  # causal chain: inherit the hop budget
                penv = parent._env or Envelope.from_event(parent)
                envelope.ttl, envelope.hop = penv.ttl, penv.hop
        envelope.sender = agent.sender
        envelope.apply_to(md)
        return event._with_metadata(md)

    async def publish_as(
        self, agent_id: str, topic: str, event: Event, *, envelope: Envelope | None = None, _fresh: bool = False
    ) -> int:
        """Publish ``event`` on ``topic`` as the agent (sender stamped). Returns deliveries.

        ``_fresh`` (internal): the event was just built for this call and is not shared yet, so
        the envelope is written into it instead of into a copy.
        """
        agent = self._agents.get(agent_id) or self[agent_id]
        if _fresh and envelope is not None:
            envelope.sender = agent.sender
            parent = agent.current
            if parent is not None and envelope.hop == 0 and parent._env is not None:
                envelope.ttl, envelope.hop = parent._env.ttl, parent._env.hop  # causal: inherit the budget
            envelope.apply_to(event.metadata)
        else:
            event = self.stamp(agent, event, envelope)
        agent.emitted += 1
        return await self._bus.publish(topic, event)

    # -- the actor loop ------------------------------------------------------------------
    async def _run(self, agent: ManagedAgent) -> None:
        state, mailbox = agent.state, agent.mailbox
        assert mailbox is not None
        on_event = agent.behavior.on_event
        async for topic, received in mailbox:
            event = hop_on(received)
            if event is None:
                agent.expired += 1
                continue
            state.topic = topic
            agent.current = event
            try:
                actions = on_event(event, state)
                if actions.__class__ is _Coroutine or (actions is not None and inspect.isawaitable(actions)):
                    actions = await actions
                agent.handled += 1
                if actions:
                    await self._execute(agent, actions)
            except Exception as exc:  # noqa: BLE001 - handler errors are contained and reported
                if self._record_failure(agent, topic, event, exc):
                    agent.current = None
                    await self._halt(agent, "failed")
                    return
            finally:
                agent.current = None
            state.touch()
            if state.persistent.dirty:
                self._save_state(agent)

    async def _execute(self, agent: ManagedAgent, actions: Iterable[Action]) -> None:
        for action in actions:
            if not isinstance(action, Action):
                raise UsageError(f"on_event of {agent.id!r} returned {action!r}; expected loom.Action items")
            if action.kind == "emit":
                assert action.event is not None
                await self.publish_as(agent.id, action.topic, action.event)
            else:
                await self._run_tool_action(agent, action)

    async def _run_tool_action(self, agent: ManagedAgent, action: Action) -> None:
        result = await self._loom.tools.invoke(action.tool, dict(action.args), caller=agent.sender)
        meta = {"action_type": action.tool, "status": "ok" if result.ok else "error", "call_id": result.id}
        body = {"output": result.output} if result.ok else {"error": f"{result.error.code}: {result.error.message}"}  # type: ignore[union-attr]
        event = Event.from_json("action_result", body, source=agent.sender, metadata=meta, tags=["action"])
        self._bus.publish_nowait(f"agent.{agent.id}", event)

    def _record_failure(
        self, agent: ManagedAgent, topic: str, event: Event | None, exc: Exception, *, fatal: bool = False
    ) -> bool:
        """Count and report a handler error; return whether the agent must move to ``failed``."""
        now = time.monotonic()
        agent.failed += 1
        agent.last_error = f"{exc.__class__.__name__}: {exc}"
        window = agent._failures
        window.append(now)
        while window and now - window[0] > agent.restart.window_s:
            window.popleft()
        fatal = fatal or len(window) > agent.restart.max_failures
        log.error(
            "agent %s failed on %s (%s)%s",
            agent.id,
            topic or "init",
            event.type if event else "-",
            " - giving up" if fatal else "",
            exc_info=exc,
        )
        body = {
            "agent_id": agent.id,
            "error_type": exc.__class__.__name__,
            "error": str(exc),
            "traceback": "".join(traceback.format_exception(exc)[-3:]),
            "topic": topic,
            "event_id": event.id if event else "",
            "event_type": event.type if event else "",
            "failures_in_window": len(window),
            "fatal": fatal,
        }
        self._bus.publish_nowait(
            f"agent.{agent.id}.error",
            Event("agent.error", json.dumps(body).encode(), source=f"agent.{agent.id}", priority=80),
        )
        return fatal

    def _save_state(self, agent: ManagedAgent) -> None:
        if not agent.state.persistent.dirty:
            return
        try:
            self.store.save(agent.id, agent.state.persistent)
            agent.state.persistent.dirty = False
        except (LoomError, OSError) as exc:
            self._record_failure(agent, "", agent.current, exc)

    def _notify(self, kind: str, agent: ManagedAgent) -> None:
        # Lifecycle events for inspectors; observers must never block the runtime.
        if self._bus.closed:
            return
        body = {"agent_id": agent.id, "status": agent.status, "topics": agent.topics}
        self._bus.publish_nowait(f"system.agent.{agent.id}", Event(kind, json.dumps(body).encode(), source="loom"))


_Coroutine = types.CoroutineType


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
