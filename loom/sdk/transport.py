"""The seam between the SDK's Agent/Context and a runtime.

A transport attaches an :class:`~loom.sdk.agent.Agent` somewhere and hands back its agent core
(:class:`~loom.agents.managed.ManagedAgent`); from then on :class:`~loom.sdk.context.Context`
talks to the core and its link only, so handler code runs the same everywhere.
:class:`LocalTransport` attaches to a :class:`loom.Loom` in this process (no serialisation);
:class:`loom.bridge.client.BridgeTransport` runs the core in this process and links it to a
runtime in another one through the bridge.
"""

from __future__ import annotations

import inspect
from types import CoroutineType
from typing import TYPE_CHECKING, Protocol

from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.agents.managed import ManagedAgent
    from loom.agents.runtime import AgentRuntime
    from loom.agents.state import AgentState
    from loom.events.event import Event
    from loom.sdk.agent import Agent
    from loom.tools.registry import ToolRegistry

__all__ = ["LocalTransport", "SdkBehavior", "Transport", "start_agent"]


class Transport(Protocol):
    """Where an :class:`~loom.sdk.agent.Agent` runs."""

    async def attach(self, agent: Agent) -> ManagedAgent:
        """Start the agent; returns its running core.

        Raises:
            LoomError: it could not start (``on_init`` failed, the bridge refused it, ...).
        """
        ...

    async def detach(self, agent: Agent) -> None:
        """Stop the agent (its ``on_shutdown`` runs). Idempotent."""
        ...


class SdkBehavior:
    """Adapts an SDK handler ``on_event(ctx, topic, event)`` to the core's AgentBehavior."""

    __slots__ = ("agent",)

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def on_event(self, event: Event, state: AgentState) -> None:
        handler = self.agent.on_event
        if handler is not None:
            result = handler(self.agent.ctx, state.topic, event)
            if result.__class__ is CoroutineType or (result is not None and inspect.isawaitable(result)):
                await result

    async def on_shutdown(self) -> None:
        await self.agent._on_shutdown()


async def start_agent(agents: AgentRuntime, agent: Agent) -> ManagedAgent:
    """Create ``agent``'s core in ``agents`` (replacing one with its id) and start it: the one way
    both transports start an SDK agent.

    Raises:
        LoomError: ``on_init`` failed (the core stays, ``failed``, with the cause in ``last_error``).
    """
    core = await agents.create(
        agent.agent_id,
        SdkBehavior(agent),
        topics=agent.topics,
        capabilities=[c.name for c in agent.capabilities],
        mailbox_size=agent.mailbox_size,
        mailbox_qos=agent.qos,
        durable=agent.durable,
        restart=agent.restart,
    )
    await core.start()
    if core.status == "failed":
        raise LoomError(f"agent {agent.agent_id!r} failed to start: {core.last_error}")
    return core


class LocalTransport:
    """An agent inside the runtime of this process: an actor of its AgentRuntime, its capabilities
    tools of its ToolRegistry."""

    def __init__(self, agents: AgentRuntime, tools: ToolRegistry) -> None:
        self.agents = agents
        self.tools = tools

    async def attach(self, agent: Agent) -> ManagedAgent:
        self.tools.unregister_owner(agent.agent_id)
        for cap in agent.capabilities:  # an agent's capabilities are tools of the runtime
            self.tools.register(cap, provider="local", owner=agent.agent_id)
        return await start_agent(self.agents, agent)

    async def detach(self, agent: Agent) -> None:
        core = self.agents.get(agent.agent_id)
        if core is not None and isinstance(core.behavior, SdkBehavior) and core.behavior.agent is agent:
            await self.agents.delete(agent.agent_id)
            self.tools.unregister_owner(agent.agent_id)
