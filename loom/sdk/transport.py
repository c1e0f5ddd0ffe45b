"""The seam between the SDK's Agent/Context and a runtime.

:class:`LocalTransport` talks to a :class:`loom.Loom` in this process: no serialisation, the
agent is an actor of the runtime's AgentRuntime. A gRPC transport (the bridge) implements the
same protocol so that handler code runs unchanged in another process.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Protocol

from loom.collab.collaborator import Collaborator
from loom.errors import LoomError, ToolError
from loom.events.envelope import Envelope
from loom.events.event import Event

if TYPE_CHECKING:
    from loom.agents.runtime import ManagedAgent
    from loom.agents.state import AgentState
    from loom.runtime import Loom
    from loom.sdk.agent import Agent

__all__ = ["LocalTransport", "Transport"]


class Transport(Protocol):
    """What an :class:`~loom.sdk.agent.Agent` needs from a runtime, local or remote."""

    async def attach(self, agent: Agent) -> None: ...

    async def detach(self, agent: Agent) -> None: ...

    async def publish(self, agent: Agent, topic: str, event: Event, envelope: Envelope | None) -> int: ...

    def collaborator(self, agent: Agent) -> Collaborator: ...

    async def invoke(self, name: str, args: Mapping[str, Any], version: str | None, timeout: float) -> Any: ...

    def subscribe(self, agent: Agent, pattern: str) -> None: ...

    def unsubscribe(self, agent: Agent, pattern: str) -> None: ...

    def subscriptions(self, agent: Agent) -> list[str]: ...

    def state(self, agent: Agent) -> AgentState: ...


class _SdkBehavior:
    """Adapts an SDK handler ``on_event(ctx, topic, event)`` to the runtime's AgentBehavior."""

    __slots__ = ("_agent",)

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    async def on_event(self, event: Event, state: AgentState) -> None:
        handler = self._agent.on_event
        if handler is not None:
            result = handler(self._agent.ctx, state.topic, event)
            if result.__class__ is CoroutineType or (result is not None and inspect.isawaitable(result)):
                await result

    async def on_shutdown(self) -> None:
        await self._agent._on_shutdown()


class LocalTransport:
    """An agent inside the runtime of this process."""

    def __init__(self, rt: Loom, caller: str = "") -> None:
        self.rt = rt
        self._caller = caller

    def _managed(self, agent: Agent) -> ManagedAgent:
        return self.rt.agents[agent.agent_id]

    async def attach(self, agent: Agent) -> None:
        agents = self.rt.agents
        await agents.create(
            agent.agent_id,
            _SdkBehavior(agent),
            topics=agent.topics,
            capabilities=[c.name for c in agent.capabilities],
            mailbox_size=agent.mailbox_size,
            restart=agent.restart,
        )
        self.rt.tools.unregister_owner(agent.agent_id)
        for cap in agent.capabilities:  # an agent's capabilities are tools of the runtime
            self.rt.tools.register(cap, provider="local", owner=agent.agent_id)
        managed = await agents.start(agent.agent_id)
        if managed.status == "failed":
            raise LoomError(f"agent {agent.agent_id!r} failed to start: {managed.last_error}")

    async def detach(self, agent: Agent) -> None:
        managed = self.rt.agents.get(agent.agent_id)
        if managed is not None and managed.behavior.__class__ is _SdkBehavior and managed.behavior._agent is agent:
            await self.rt.agents.delete(agent.agent_id)
            self.rt.tools.unregister_owner(agent.agent_id)

    async def publish(self, agent: Agent, topic: str, event: Event, envelope: Envelope | None) -> int:
        # Context builds a fresh event for every publish, so the envelope may be written in place.
        return await self.rt.agents.publish_as(agent.agent_id, topic, event, envelope=envelope, _fresh=True)

    def collaborator(self, agent: Agent) -> Collaborator:
        return Collaborator(self.rt.bus, f"agent.{agent.agent_id}", agents=self.rt.agents, agent=self._managed(agent))

    async def invoke(self, name: str, args: Mapping[str, Any], version: str | None, timeout: float) -> Any:
        tool = self.rt.tools.get(name)
        if version and tool is not None and getattr(tool, "version", version) != version:
            have = getattr(tool, "version", "?")
            raise ToolError("NOT_FOUND", name, f"{name!r} is offered in version {have!r}, not {version!r}")
        result = await self.rt.tools.invoke(name, args, timeout=timeout, caller=self._caller)
        return result.unwrap()

    def subscribe(self, agent: Agent, pattern: str) -> None:
        self.rt.agents.subscribe(agent.agent_id, pattern)

    def unsubscribe(self, agent: Agent, pattern: str) -> None:
        self.rt.agents.unsubscribe(agent.agent_id, pattern)

    def subscriptions(self, agent: Agent) -> list[str]:
        return self.rt.agents.subscriptions(agent.agent_id)

    def state(self, agent: Agent) -> AgentState:
        return self._managed(agent).state
