"""AgentRuntime: the agents of one runtime, as actors on its bus.

It creates, starts, stops and deletes agents, keeps the :class:`AgentDirectory` current and
publishes lifecycle events on ``system.agent.<id>``. What an agent does once started (the
mailbox loop, envelope rules, contained errors, restart policy, pending replies) is its
:class:`~loom.agents.managed.ManagedAgent` core, the same one a bridged agent runs in its own
process.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from loom.agents.behavior import AgentBehavior, AgentConfig
from loom.agents.directory import AgentDirectory, AgentInfo
from loom.agents.managed import AgentNotFound, ManagedAgent, RestartPolicy
from loom.agents.state import AgentState, MemoryStateStore, StateStore
from loom.errors import UsageError
from loom.events.envelope import Envelope
from loom.events.event import Event
from loom.events.qos import QoS
from loom.events.topics import validate_pattern, validate_topic

if TYPE_CHECKING:
    from loom.agents.link import Link

__all__ = ["AgentNotFound", "AgentRuntime", "ManagedAgent", "RestartPolicy"]


class AgentRuntime:
    """The agents of one runtime. Owned by :class:`loom.Loom` as ``rt.agents``.

    Args:
        link: where its agents touch the bus (the runtime's :class:`~loom.agents.link.LocalLink`).
        store: where persistent agent state lives (memory when omitted).
        directory: the directory to keep current (a fresh one when omitted).
    """

    def __init__(self, link: Link, *, store: StateStore | None = None, directory: AgentDirectory | None = None) -> None:
        self.link = link
        self.store: StateStore = store or MemoryStateStore()
        self.directory = directory if directory is not None else AgentDirectory()
        self._agents: dict[str, ManagedAgent] = {}
        self._announced: dict[str, str] = {}  # agent id -> the status its last lifecycle event told
        link.instruments.observe("loom.agent.mailbox_depth", self._observe_depth, gauge=True)
        link.instruments.observe("loom.agent.handled", self._observe_handled)

    def _observe_depth(self) -> list[tuple[float, dict[str, str]]]:
        return [(a.mailbox_depth, {"loom.agent": a.id}) for a in list(self._agents.values())]  # exporters' thread

    def _observe_handled(self) -> list[tuple[float, dict[str, str]]]:
        out: list[tuple[float, dict[str, str]]] = []
        for a in list(self._agents.values()):
            for status, n in (("ok", a.handled), ("error", a.failed), ("expired", a.expired)):
                if n:
                    out.append((n, {"loom.agent": a.id, "loom.status": status}))
        return out

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
        durable: bool | None = None,
    ) -> ManagedAgent:
        """Register an agent (state ``created``); an existing agent with this id is replaced.

        Raises:
            UsageError: bad id, topics, behavior or options.
        """
        validate_agent_id(agent_id)
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
        agent = ManagedAgent(
            config,
            behavior,
            AgentState(agent_id, self.store.load(agent_id)),
            link=self.link,
            store=self.store,
            mailbox_size=mailbox_size,
            mailbox_qos=QoS(mailbox_qos),
            restart=restart,
            on_change=self._changed,
            durable=durable,
        )
        self._agents[agent_id] = agent
        self._announced[agent_id] = agent.status
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
        await agent.start()
        return agent

    async def stop(self, agent_id: str) -> ManagedAgent:
        """Stop handling events (the current handler is cancelled), call ``on_shutdown``. Idempotent.

        Raises:
            AgentNotFound: unknown id.
        """
        agent = self[agent_id]
        await agent.halt("stopped")
        return agent

    async def delete(self, agent_id: str) -> None:
        """Stop (if running), unregister and forget the agent. Its persistent state stays in the store.

        Raises:
            AgentNotFound: unknown id.
        """
        agent = await self.stop(agent_id)
        del self._agents[agent_id]
        self._announced.pop(agent_id, None)
        self.directory.unregister(agent_id)
        self._notify("agent.deleted", agent)

    async def aclose(self) -> None:
        """Stop every agent (each gets ``on_shutdown``), then close the state store."""
        self.link.instruments.forget("loom.agent.mailbox_depth", self._observe_depth)
        self.link.instruments.forget("loom.agent.handled", self._observe_handled)
        for agent in list(self._agents.values()):
            await agent.halt("stopped")
        self.store.close()

    def _changed(self, agent: ManagedAgent) -> None:
        status = "active" if agent.status == "running" else "inactive"
        self.directory.update(agent.id, status=status, topics=tuple(agent.topics))
        if self._announced.get(agent.id) != agent.status:
            self._announced[agent.id] = agent.status
            self._notify(f"agent.{'started' if agent.status == 'running' else agent.status}", agent)

    def _notify(self, kind: str, agent: ManagedAgent) -> None:
        # Lifecycle notes for inspectors (and the event log); built only when someone listens.
        topic = f"system.agent.{agent.id}"
        inst = self.link.instruments
        if inst.watched(topic):
            body = {"agent_id": agent.id, "status": agent.status, "topics": agent.topics}
            inst.note(topic, Event(kind, json.dumps(body).encode(), source="loom"))

    # -- dynamic subscriptions (reference §3.3) -----------------------------------------
    def subscribe(self, agent_id: str, pattern: str) -> None:
        """Add a topic pattern at run time.

        Raises:
            AgentNotFound: unknown agent. UsageError: already subscribed to exactly this pattern.
        """
        self[agent_id].subscribe(pattern)

    def unsubscribe(self, agent_id: str, pattern: str) -> None:
        """Remove a topic pattern at run time.

        Raises:
            AgentNotFound: unknown agent. UsageError: not subscribed, or the private reply topic.
        """
        self[agent_id].unsubscribe(pattern)

    def subscriptions(self, agent_id: str) -> list[str]:
        """The agent's topic patterns (its reply topic first)."""
        return list(self[agent_id].topics)

    # -- emitting ------------------------------------------------------------------------
    async def publish_as(self, agent_id: str, topic: str, event: Event, *, envelope: Envelope | None = None) -> int:
        """Publish ``event`` on ``topic`` as the agent (sender stamped). Returns deliveries.

        Raises:
            AgentNotFound: unknown id.
        """
        return await self[agent_id].publish_as(topic, event, envelope)


def validate_agent_id(agent_id: object) -> None:
    """An agent id is one topic segment (it names the private topic ``agent.<id>.replies``).

    Raises:
        UsageError / InvalidTopic: not a non-empty str, a dot, or not usable in a topic.
    """
    if not isinstance(agent_id, str) or not agent_id:
        raise UsageError(f"agent id must be a non-empty str, got {agent_id!r}")
    validate_topic(f"agent.{agent_id}.replies")
    if "." in agent_id:
        raise UsageError(f"agent id {agent_id!r} must not contain '.' (it is one topic segment)")
