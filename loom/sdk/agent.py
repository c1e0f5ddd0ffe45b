"""Agent: the user-facing way to put a handler on the bus.

agent = Agent("planner", topics=["topic.plan"], on_event=handler)
await agent.start()          # joins loom.current() (or runtime=...)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from loom.agents.runtime import RestartPolicy
from loom.errors import UsageError
from loom.events.qos import QoS
from loom.events.topics import validate_pattern
from loom.sdk.capability import Capability, get_capability
from loom.sdk.context import Context

if TYPE_CHECKING:
    from loom.agents.managed import ManagedAgent
    from loom.agents.state import AgentState
    from loom.events.event import Event
    from loom.runtime import Loom
    from loom.sdk.transport import Transport

__all__ = ["Agent", "Handler"]

Handler = Callable[[Context, str, "Event"], Awaitable[None] | None]


class Agent:
    """An agent: an id, the topics it listens to, the capabilities it offers, and a handler.

    Args:
        agent_id: unique in its runtime; one topic segment (no dots, no spaces).
        topics: subscription patterns (``*`` and trailing ``>`` allowed).
        capabilities: functions decorated with ``@capability``.
        on_event: ``async def on_event(ctx, topic, event)`` (a sync function works too).
        behavior: an object that handles events instead of ``on_event``: callable as
            ``(ctx, topic, event)``; its ``attach(agent)`` (if any) runs when the agent starts and
            its ``detach()`` (sync or async) when it stops (e.g. :class:`loom.cognitive.CognitiveAgent`).
        address: ``host:port`` of a Loom bridge (the runtime is in another process). Without it the
            agent joins the runtime of this process, or, if there is none, ``$LOOM_BRIDGE_ADDR``.
        token: the bridge's bearer token (default ``$LOOM_BRIDGE_TOKEN``).
        runtime: the :class:`loom.Loom` to join (default ``loom.current()`` at start).
        mailbox_size: events queued before publishers wait (BATCHED backpressure).
        qos: the mailbox's :class:`loom.QoS` (default BATCHED).
        durable: at-least-once delivery when the runtime is in a cluster: each event acked once the
            handler returns, delivered again (here or to a replica) if it never does (docs/scale-out.md).
            Default: as the QoS says (BACKGROUND is durable).
        restart: failure policy (default: more than 5 errors in 60 s → ``failed``).
    """

    def __init__(
        self,
        agent_id: str,
        topics: Iterable[str] = (),
        capabilities: Iterable[Any] = (),
        on_event: Handler | None = None,
        *,
        behavior: Any = None,
        address: str | None = None,
        runtime: Loom | None = None,
        mailbox_size: int = 1000,
        restart: RestartPolicy | None = None,
        token: str | None = None,
        qos: QoS | int = QoS.BATCHED,
        durable: bool | None = None,
    ) -> None:
        if not isinstance(agent_id, str) or not agent_id or "." in agent_id or agent_id.split() != [agent_id]:
            raise UsageError(f"agent id must be a non-empty str without dots or spaces, got {agent_id!r}")
        if isinstance(topics, str):
            raise UsageError(f"topics must be a list of patterns, not the string {topics!r}")
        self.topics = tuple(dict.fromkeys(topics))
        for t in self.topics:
            validate_pattern(t)
        self.capabilities: tuple[Capability, ...] = tuple(get_capability(c) for c in capabilities)
        if behavior is not None:
            if on_event is not None:
                raise UsageError(f"Agent({agent_id!r}): give on_event= or behavior=, not both")
            if not callable(behavior):
                raise UsageError(f"behavior must be callable as (ctx, topic, event), got {behavior!r}")
            on_event = behavior
        if on_event is not None and not callable(on_event):
            raise UsageError(f"on_event must be a function (ctx, topic, event), got {on_event!r}")
        if on_event is not None:
            params = [
                p
                for p in inspect.signature(on_event).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if len(params) < 3 and not any(
                p.kind == p.VAR_POSITIONAL for p in inspect.signature(on_event).parameters.values()
            ):
                raise UsageError(
                    f"on_event {getattr(on_event, '__qualname__', on_event)!r} must accept (ctx, topic, event)"
                )
        if address is not None and runtime is not None:
            raise UsageError(
                f"Agent({agent_id!r}): give either runtime= (this process) or address= (a bridge), not both"
            )
        if address is not None and (not isinstance(address, str) or ":" not in address):
            raise UsageError(f"address must be 'host:port', got {address!r}")
        self.agent_id = agent_id
        self.on_event = on_event
        self.behavior = behavior
        self.mailbox_size = mailbox_size
        try:
            self.qos = QoS(qos)
        except ValueError:
            raise UsageError(f"unknown QoS {qos!r}; use one of {[q.name for q in QoS]}") from None
        self.durable = durable
        self.restart = restart
        self._runtime = runtime
        self._address = address
        self._token = token
        self._transport: Transport | None = None
        self._core: ManagedAgent | None = None  # the running agent core (in this process either way)
        self.ctx = Context(self)

    @property
    def running(self) -> bool:
        return self._core is not None

    @property
    def core(self) -> ManagedAgent:
        """The agent's core: counters, status, mailbox (what ``rt.agents[id]`` shows in-process).

        Raises:
            UsageError: the agent is not started.
        """
        if self._core is None:
            raise UsageError(f"agent {self.agent_id!r} is not started: `await agent.start()` first")
        return self._core

    @property
    def state(self) -> AgentState:
        """The agent's state (persistent and ephemeral parts)."""
        return self.core.state

    async def start(self) -> Agent:
        """Join the runtime and start handling events. Re-starting a running agent is a no-op.

        An agent with the same id already in the runtime (e.g. from a previous run of a notebook
        cell) is replaced.

        Raises:
            NoRuntime: no ``runtime=`` given and none is running in this process.
        """
        if self._transport is not None:
            return self
        transport = self._choose_transport()
        self._transport = transport
        try:
            self._core = await transport.attach(self)
        except BaseException:
            self._transport = None
            raise
        attach = getattr(self.behavior, "attach", None)
        if attach is not None:
            attach(self)
        return self

    def _choose_transport(self) -> Transport:
        import os

        from loom.errors import NoRuntime
        from loom.runtime import current
        from loom.sdk.transport import LocalTransport

        address = self._address
        runtime = self._runtime
        if address is None and runtime is None:
            try:
                runtime = current()
            except NoRuntime:
                address = os.environ.get("LOOM_BRIDGE_ADDR")
                if not address:
                    raise NoRuntime(
                        f"agent {self.agent_id!r} has no runtime: start one in this process (`await Loom().start()`, "
                        "`%loom start`), pass runtime=..., or join a bridge with address='host:port' / LOOM_BRIDGE_ADDR"
                    ) from None
        if address is not None:
            from loom.bridge.client import BridgeTransport

            return BridgeTransport(address, token=self._token)
        assert runtime is not None
        return LocalTransport(runtime.agents, runtime.tools)

    async def run(self) -> None:
        """Start, handle events until SIGINT or SIGTERM, then stop (for agent scripts)."""
        import signal

        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()

    async def stop(self) -> None:
        """Leave the runtime (the current handler is cancelled). Idempotent."""
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                await transport.detach(self)
            finally:
                self._core = None
                detach = getattr(self.behavior, "detach", None)
                if detach is not None:
                    result = detach()
                    if inspect.isawaitable(result):
                        await result

    async def _on_shutdown(self) -> None:
        """Hook for subclasses: called once when the agent stops."""

    async def emit(self, topic: str, payload: Any = None, *, type: str = "message", **kw: Any) -> int:
        """Publish as this agent from outside a handler (a notebook cell, a test)."""
        return await self.ctx.emit(topic, payload, type=type, **kw)

    async def __aenter__(self) -> Agent:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<Agent {self.agent_id} topics={list(self.topics)} {'running' if self.running else 'stopped'}>"
