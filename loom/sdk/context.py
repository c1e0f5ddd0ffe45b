"""Context: what a handler ``on_event(ctx, topic, event)`` uses to act, converse and collaborate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from loom.collab.collaborator import make_event
from loom.collab.contract_net import contract_net, proposal_score
from loom.collab.strategy import BarrierResult, ContractNetResult, FanoutResult, Strategy
from loom.errors import UsageError
from loom.events.envelope import Envelope, agent_reply_topic
from loom.events.event import Event, new_event_id

if TYPE_CHECKING:
    from loom.agents.state import AgentState
    from loom.sdk.agent import Agent

__all__ = ["Context", "Thread"]

_REPLY_TYPE = {
    "collab.request": "collab.reply",
    "collab.cfp": "collab.proposal",
    "collab.award": "collab.result",
}


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
    """The agent's handle on the runtime; the same in-process and over the bridge."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._collab: tuple[Any, Any] | None = None  # (transport, its Collaborator), reused per call

    def _collaborator(self) -> Any:
        transport = self._transport()
        cached = self._collab
        if cached is None or cached[0] is not transport:
            cached = self._collab = (transport, transport.collaborator(self._agent))
        return cached[1]

    @property
    def agent_id(self) -> str:
        return self._agent.agent_id

    @property
    def state(self) -> AgentState:
        """The agent's state (``state.persistent`` is saved after each event that changed it)."""
        return self._agent.state

    def _transport(self) -> Any:
        transport = self._agent._transport
        if transport is None:
            raise UsageError(f"agent {self.agent_id!r} is not started: `await agent.start()` first")
        return transport

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
            )
        return await self._transport().publish(self._agent, topic, event, envelope)

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
        kind = type or _REPLY_TYPE.get(thread.origin_type, "collab.reply")
        event = make_event(kind, obj, source=f"agent.{self.agent_id}", metadata=md, tags=["collab"])
        src = thread.envelope
        me = self._agent.agent_id
        envelope = Envelope(thread.id, src.correlation_id, "", f"agent.{me}.replies", src.ttl, src.hop)
        return await self._transport().publish(self._agent, src.reply_to, event, envelope)

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
        raise_on_timeout: bool = False,
    ) -> Event | list[Event] | None:
        """Ask ``topic`` within ``thread``: the first reply (``None`` on timeout), or up to
        ``first_k`` replies as a list (partial on timeout) when ``first_k > 1``.
        """
        collab = self._collaborator()
        thread_id = thread.id if thread is not None else None
        timeout = _ms(timeout_ms, "timeout_ms")
        if first_k.__class__ is not int or first_k < 1:
            raise UsageError(f"first_k must be an int >= 1, got {first_k!r}")
        if first_k == 1:
            return await collab.request_reply(
                topic, payload, timeout=timeout, thread_id=thread_id, raise_on_timeout=raise_on_timeout
            )
        result = await collab.fanout_fanin(
            [topic],
            payload,
            strategy=Strategy.first_k(first_k),
            timeout=timeout,
            thread_id=thread_id,
            raise_on_timeout=raise_on_timeout,
        )
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
        """
        return await self._transport().invoke(name, dict(args or {}), version, _ms(timeout_ms, "timeout_ms"))

    # -- subscriptions -------------------------------------------------------------------
    def subscribe(self, pattern: str) -> None:
        """Join ``pattern`` at run time (e.g. a thread's broadcast topic)."""
        self._transport().subscribe(self._agent, pattern)

    def unsubscribe(self, pattern: str) -> None:
        self._transport().unsubscribe(self._agent, pattern)

    def subscriptions(self) -> list[str]:
        return self._transport().subscriptions(self._agent)

    def new_thread(self) -> Thread:
        """A fresh conversation started by this agent."""
        tid = f"th-{new_event_id()}"
        return Thread(id=tid, envelope=Envelope.new(tid, f"agent.{self.agent_id}"), origin_type="", origin_id="")
