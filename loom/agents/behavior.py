"""What an agent is to the runtime: a behavior with three hooks, and the actions it returns."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from loom.errors import UsageError
from loom.events.event import Event

if TYPE_CHECKING:
    from loom.agents.state import AgentState

__all__ = ["Action", "AgentBehavior", "AgentConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Static description of an agent (mirrors ``loom.v1.AgentConfig``)."""

    agent_id: str
    agent_type: str = "agent"
    topics: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """Something a behavior asks the runtime to do after handling an event.

    ``emit``: publish ``event`` on ``topic`` as the agent (sender stamped, hop/ttl inherited
    from the event being handled). ``tool``: invoke capability ``tool`` with ``args``; the
    outcome is published as an ``action_result`` event on ``agent.<id>``.
    """

    kind: Literal["emit", "tool"]
    topic: str = ""
    event: Event | None = None
    tool: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def emit(cls, topic: str, event: Event) -> Action:
        if not isinstance(event, Event):
            raise UsageError(f"Action.emit needs an Event, got {event.__class__.__name__}")
        return cls(kind="emit", topic=topic, event=event)

    @classmethod
    def call(cls, tool: str, args: Mapping[str, Any] | None = None) -> Action:
        if not isinstance(tool, str) or not tool:
            raise UsageError(f"Action.call needs a tool name, got {tool!r}")
        return cls(kind="tool", tool=tool, args=dict(args or {}))


@runtime_checkable
class AgentBehavior(Protocol):
    """The three hooks the runtime calls, each sync or async.

    ``on_event`` runs for one event at a time, in mailbox order (actor semantics); the topic
    the event arrived on is ``state.topic``. It returns actions (or ``None``).
    """

    def on_init(self, config: AgentConfig) -> Awaitable[None] | None: ...

    def on_event(self, event: Event, state: AgentState) -> Awaitable[list[Action] | None] | list[Action] | None: ...

    def on_shutdown(self) -> Awaitable[None] | None: ...
