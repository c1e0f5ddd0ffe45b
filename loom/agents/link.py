"""Link: where an agent core, and the collaboration primitives it runs, touch a bus.

An agent core (:class:`~loom.agents.managed.ManagedAgent`) is written against this protocol
only, so an agent behaves the same wherever it runs. In-process the link is
:class:`LocalLink`: the runtime's EventBus, ToolRegistry and Supervisor. In another process the
bridge client (:class:`loom.bridge.client.BridgeTransport`) is the link: it publishes over its
stream, keeps a bus of its own for its subscriptions (the agent's mailbox, a barrier's listener)
and asks the hub to forward their patterns, and invokes tools through ``ForwardAction``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from loom._supervisor import Supervisor
    from loom.events.bus import EventBus
    from loom.events.event import Event
    from loom.events.subscription import Subscription
    from loom.telemetry.seam import Instruments
    from loom.tools.registry import ToolRegistry
    from loom.tools.result import ToolResult

__all__ = ["Link", "LocalLink"]


class Link(Protocol):
    """What an agent core needs from the place it runs in."""

    upstream: bool
    """Also write the ``loom.``-prefixed envelope keys (peers running upstream's SDK may read them)."""

    instruments: Instruments
    """Where the agent core reports: its ``handle`` spans, lifecycle and state notes."""

    async def publish(self, topic: str, event: Event) -> int:
        """Publish ``event``; returns deliveries (where they are known). It may leave together
        with others (the bridge batches what queues up)."""
        ...

    async def send(self, topic: str, event: Event) -> int:
        """Publish a conversation message someone may be waiting for (a reply, an award): at once
        where the link can (the bridge writes it on an idle stream itself), else like publish."""
        ...

    async def request(self, topic: str, event: Event) -> int:
        """Publish ``event``, a request a reply is expected to: a topic nothing subscribes to is
        an error: the link says so right after (:meth:`unrouted`), or reports it to the waiting
        request's collector when it learns it later (the bridge's hub does)."""
        ...

    def unrouted(self, topic: str) -> bool:
        """Whether the link knows that nothing subscribes to ``topic`` (asked after a request
        reached no one)."""
        ...

    def publish_nowait(self, topic: str, event: Event) -> int:
        """Publish without waiting (observability and error events); what cannot go is counted."""
        ...

    def subscribe(self, patterns: str | Iterable[str], **options: Any) -> Subscription:
        """A subscription with :meth:`EventBus.subscribe`'s options; patterns added to it later
        (``sub.add_pattern``) are served too."""
        ...

    async def invoke(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        version: str | None = None,
        timeout: float | None = None,
        caller: str = "",
    ) -> ToolResult:
        """Invoke a tool; failures come back in the result, never raised."""
        ...

    supervisor: Supervisor
    """Owns the tasks of what runs on this link, and ends what waits on it when its owner stops
    (``supervisor.watch(collector)``, ``with supervisor.guard():``)."""


class LocalLink:
    """The link of agents and primitives inside this process: the runtime's own parts."""

    upstream = False

    def __init__(self, bus: EventBus, tools: ToolRegistry, supervisor: Supervisor) -> None:
        self.bus = bus
        self.tools = tools
        self.supervisor = supervisor
        self.instruments = bus.instruments
        self.subscribe = bus.subscribe
        self.publish = self.send = self.request = bus.publish  # the bus's own: no extra frame on the hot path
        self.publish_nowait = bus.publish_nowait

    def unrouted(self, topic: str) -> bool:
        return not self.bus.has_subscribers(topic)

    async def invoke(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        version: str | None = None,
        timeout: float | None = None,
        caller: str = "",
    ) -> ToolResult:
        return await self.tools.invoke(name, args, version=version, timeout=timeout, caller=caller)
