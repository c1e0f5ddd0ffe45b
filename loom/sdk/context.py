"""Context: what a handler ``on_event(ctx, topic, event)`` uses to act, converse and collaborate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from loom.collab.collaborator import Collaborator, make_event, make_reply
from loom.collab.contract_net import contract_net, proposal_score
from loom.collab.strategy import BarrierResult, ContractNetResult, FanoutResult, RequestTimeout, Strategy
from loom.errors import UsageError
from loom.events.envelope import Envelope, agent_reply_topic
from loom.events.event import Event, new_event_id

if TYPE_CHECKING:
    from loom.agents.managed import ManagedAgent
    from loom.agents.state import AgentState
    from loom.sdk.agent import Agent

__all__ = ["Context", "Thread"]


class Thread(NamedTuple):
    """A conversation: the thread id and the envelope of the event that brought it here (read-only)."""

    id: str
    envelope: Envelope
    origin_type: str
    origin_id: str

    @property
    def broadcast_topic(self) -> str:
        return f"thread.{self.id}.broadcast"

    @property
    def reply_topic(self) -> str:
        return f"thread.{self.id}.reply"


def _ms(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UsageError(f"{name} must be a positive number of milliseconds, got {value!r}")
    return value / 1000


class Context:
    """The agent's handle on the runtime; the same in-process and over the bridge (it talks to the
    agent's core and the core's link, never to a transport)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._collab: Collaborator | None = None  # of the current core, reused per call

    def _core(self) -> ManagedAgent:
        core = self._agent._core
        if core is None:
            raise UsageError(f"agent {self.agent_id!r} is not started: `await agent.start()` first")
        return core

    def _collaborator(self) -> Collaborator:
        core = self._core()
        collab = self._collab
        if collab is None or collab._agent is not core:
            collab = self._collab = Collaborator(core.link, core.sender, agent=core)
        return collab

    @property
    def agent_id(self) -> str:
        return self._agent.agent_id

    @property
    def state(self) -> AgentState:
        """The agent's state (``state.persistent`` is saved after each event that changed it)."""
        return self._core().state

    # -- publishing ----------------------------------------------------------------------
    async def emit(
        self,
        topic: str,
        payload: Any = None,
        *,
        type: str = "message",
        thread: Thread | None = None,
        metadata: Mapping[str, str] | None = None,
        priority: int = 50,
    ) -> int:
        """Publish ``payload`` (bytes, str or JSON-able) on ``topic`` as this agent; returns deliveries.

        Within ``thread`` the event carries that thread's id; a causal hop budget is inherited
        from the event being handled, so agents that keep answering each other stop after 16 hops.
        """
        event = make_event(type, payload, source=f"agent.{self.agent_id}", metadata=metadata, priority=priority)
        envelope = None
        if thread is not None:
            envelope = Envelope(
                thread_id=thread.id,
                correlation_id=thread.id,
                reply_to=agent_reply_topic(self.agent_id),
                ttl=thread.envelope.ttl,
                hop=thread.envelope.hop,
                ts=event.timestamp_ms,
            )
        return await self._core().publish_as(topic, event, envelope, fresh=envelope is not None)

    def thread(self, event: Event) -> Thread:
        """The conversation ``event`` belongs to (its ``thread_id``; a fresh event starts its own)."""
        env = event._env or Envelope.from_event(event)  # the runtime caches the handled event's envelope
        return Thread(id=env.thread_id, envelope=env, origin_type=event.type, origin_id=event.id)

    async def reply(
        self,
        thread: Thread,
        obj: Any = None,
        *,
        type: str | None = None,
        score: float | None = None,
        error: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Answer the event that brought ``thread`` here, on its ``reply_to`` with its correlation id.

        The type follows the conversation: a request gets ``collab.reply``, a call for proposals
        ``collab.proposal`` (give ``score``), an award ``collab.result`` (give ``error`` on failure).
        """
        md = dict(metadata) if metadata else {}
        if score is not None:
            md["score"] = repr(float(score))
        if error:  # no status key means ok
            md["status"] = "error"
            md["error"] = str(error)
        event, envelope = make_reply(thread.origin_type, thread.envelope, self.agent_id, obj, type=type, metadata=md)
        return await self._core().publish_as(thread.envelope.reply_to, event, envelope, fresh=True)

    async def propose(self, thread: Thread, proposal: Any = None, *, score: float) -> int:
        """Bid in a contract-net round (reply to a ``collab.cfp`` with a score)."""
        return await self.reply(thread, proposal, type="collab.proposal", score=score)

    # -- collaboration -------------------------------------------------------------------
    async def request(
        self,
        thread: Thread | None,
        topic: str,
        payload: Any = None,
        *,
        first_k: int = 1,
        timeout_ms: float = 5000,
        type: str = "collab.request",
        raise_on_timeout: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> Event | list[Event] | None:
        """Ask ``topic`` within ``thread``: the first reply (``None`` on timeout), or up to
        ``first_k`` replies as a list (partial on timeout) when ``first_k > 1``. The request is an
        event of type ``type`` (as upstream's SDK lets you name it; the replier answers with
        ``ctx.reply``, which correlates whatever the type) carrying ``metadata`` (e.g. the routing
        keys ``privacy``/``latency_budget_ms`` a cognitive agent passes to its model router).

        Raises:
            NoSubscribers: nothing subscribes to ``topic``: no reply can come (raised at once).
            RequestTimeout: no reply in time, when ``raise_on_timeout``.
            RuntimeStopped: the runtime (or this agent) stopped while waiting.
        """
        collab = self._collaborator()
        thread_id = thread.id if thread is not None else None
        timeout = _ms(timeout_ms, "timeout_ms")
        if first_k.__class__ is not int or first_k < 1:
            raise UsageError(f"first_k must be an int >= 1, got {first_k!r}")
        if first_k == 1:
            return await collab.request_reply(
                topic,
                payload,
                timeout=timeout,
                thread_id=thread_id,
                type=type,
                raise_on_timeout=raise_on_timeout,
                metadata=metadata,
            )
        if metadata:
            raise UsageError("metadata= is supported for a single reply (first_k=1)")
        result = await collab.fanout_fanin(
            [topic], payload, strategy=Strategy.first_k(first_k), timeout=timeout, thread_id=thread_id, type=type
        )
        if raise_on_timeout and not result.satisfied:
            raise RequestTimeout("request", result.thread_id, f"{len(result.replies)} of {first_k} replies in time")
        return result.replies

    async def fanout(
        self,
        topics: Sequence[str],
        payload: Any = None,
        *,
        strategy: Strategy | str | tuple[str, int] = "all",
        timeout_ms: float = 5000,
        thread: Thread | None = None,
        raise_on_timeout: bool = False,
    ) -> FanoutResult:
        """One request per topic, replies gathered by ``strategy`` (any, first_k:K, majority, all, timeout)."""
        collab = self._collaborator()
        return await collab.fanout_fanin(
            topics,
            payload,
            strategy=strategy,
            timeout=_ms(timeout_ms, "timeout_ms"),
            thread_id=thread.id if thread else None,
            raise_on_timeout=raise_on_timeout,
        )

    async def barrier(
        self,
        name: str,
        parties: int | Iterable[str],
        *,
        timeout_ms: float = 10_000,
        raise_on_timeout: bool = False,
    ) -> BarrierResult:
        """Wait at barrier ``name`` until ``parties`` (a count or agent ids) arrived."""
        collab = self._collaborator()
        return await collab.barrier(
            name,
            parties,
            timeout=_ms(timeout_ms, "timeout_ms"),
            participant=self.agent_id,
            raise_on_timeout=raise_on_timeout,
        )

    async def contract_net(
        self,
        task: Any,
        participants_topic: str,
        *,
        window_ms: float = 1000,
        max_awards: int = 1,
        score: Any = proposal_score,
        execution_timeout_ms: float = 5000,
        expected: int | None = None,
        reaward: bool = True,
    ) -> ContractNetResult:
        """Run a contract-net round as coordinator (see :mod:`loom.collab.contract_net`)."""
        collab = self._collaborator()
        return await contract_net(
            collab,
            task,
            participants_topic,
            window=_ms(window_ms, "window_ms"),
            max_awards=max_awards,
            score=score,
            execution_timeout=_ms(execution_timeout_ms, "execution_timeout_ms"),
            expected=expected,
            reaward=reaward,
        )

    # -- tools ---------------------------------------------------------------------------
    async def tool(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        timeout_ms: float = 30_000,
    ) -> Any:
        """Call a capability by name (arguments validated against its schema); returns its output.

        Raises:
            ToolError: ``NOT_FOUND``, ``INVALID_PARAMS``, ``CAPABILITY_ERROR``, ``ACTION_TIMEOUT``.
            RuntimeStopped: the runtime stopped during the call.
        """
        core = self._core()
        timeout = _ms(timeout_ms, "timeout_ms")
        result = await core.link.invoke(name, dict(args or {}), version=version, timeout=timeout, caller=core.sender)
        return result.unwrap()

    # -- subscriptions -------------------------------------------------------------------
    def subscribe(self, pattern: str) -> None:
        """Join ``pattern`` at run time (e.g. a thread's broadcast topic).

        Raises:
            InvalidTopic: malformed. UsageError: already subscribed to exactly this pattern.
        """
        self._core().subscribe(pattern)

    def unsubscribe(self, pattern: str) -> None:
        """Leave ``pattern``.

        Raises:
            UsageError: not subscribed, or the agent's private reply topic.
        """
        self._core().unsubscribe(pattern)

    def subscriptions(self) -> list[str]:
        """The agent's patterns (its reply topic first)."""
        return list(self._core().topics)

    def new_thread(self) -> Thread:
        """A fresh conversation started by this agent."""
        tid = f"th-{new_event_id()}"
        return Thread(id=tid, envelope=Envelope.new(tid, f"agent.{self.agent_id}"), origin_type="", origin_id="")
