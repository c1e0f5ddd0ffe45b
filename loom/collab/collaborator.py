"""request/reply, fan-out/fan-in and barrier over envelope topics.

Every step is an event on the bus (``collab.request``, ``collab.reply``, ``collab.barrier.*``,
``collab.timeout``, ``collab.summary``), so an inspector can draw the sequence. Every
subscription a primitive opens is closed when it returns, times out or is cancelled. What a
primitive waits on is watched by its link's supervisor: when the runtime stops, it raises
RuntimeStopped at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loom.collab.inbox import Inbox, ReplyCollector, TopicInbox
from loom.collab.strategy import BarrierResult, CollabTimeout, FanoutResult, RequestTimeout, Strategy
from loom.collab.traced import traced
from loom.errors import NoSubscribers, UsageError
from loom.events.envelope import DEFAULT_TTL, Envelope, thread_reply_topic
from loom.events.event import Event, new_event_id
from loom.events.qos import QoS
from loom.events.topics import validate_topic

if TYPE_CHECKING:
    from loom.agents.link import Link
    from loom.agents.managed import ManagedAgent

__all__ = ["Collaborator", "make_event"]


def make_event(type: str, payload: Any = None, **fields: Any) -> Event:
    """An event from a payload: bytes as-is, str as UTF-8 text, anything else as JSON (None → empty)."""
    if payload.__class__ is bytes:
        return Event(type, payload, **fields)
    if payload is None:
        return Event(type, b"", **fields)
    if isinstance(payload, bytes | bytearray):
        return Event(type, bytes(payload), **fields)
    if isinstance(payload, str):
        return Event.from_text(type, payload, **fields)
    return Event.from_json(type, payload, **fields)


def make_reply(
    origin_type: str,
    src: Envelope,
    agent_id: str,
    obj: Any = None,
    *,
    type: str | None = None,
    metadata: dict[str, str] | None = None,
) -> tuple[Event, Envelope]:
    """The answer of agent ``agent_id`` to an event of ``origin_type`` that came with envelope ``src``:
    the event (its type follows the conversation: a request gets ``collab.reply``, a call for
    proposals ``collab.proposal``, an award ``collab.result``) and the envelope that correlates it;
    publish it on ``src.reply_to``. The one place replies are made (``ctx.reply``, cognitive agents)."""
    kind = type or _REPLY_TYPE.get(origin_type, "collab.reply")
    event = make_event(kind, obj, source=f"agent.{agent_id}", metadata=metadata or {}, tags=["collab"])
    envelope = Envelope(
        src.thread_id, src.correlation_id, "", f"agent.{agent_id}.replies", src.ttl, src.hop, event.timestamp_ms
    )
    return event, envelope


_REPLY_TYPE = {"collab.request": "collab.reply", "collab.cfp": "collab.proposal", "collab.award": "collab.result"}
_REPLY = frozenset(("collab.reply",))
_TAGS = ("collab",)


def _check_timeout(timeout: float) -> float:
    if timeout.__class__ is float and timeout > 0:
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise UsageError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _got_one(collector: ReplyCollector) -> bool:
    return bool(collector.events)


class Collaborator:
    """Runs the primitives for one participant (``sender``) over a :class:`~loom.agents.link.Link`.

    With ``agent`` (an agent's core, in this process or behind the bridge) replies come through
    the agent's mailbox and what it publishes is stamped by the agent; otherwise through a
    temporary subscription on the thread's reply topic.
    """

    def __init__(self, link: Link, sender: str, *, agent: ManagedAgent | None = None) -> None:
        self.link = link
        self.sender = sender
        self._agent = agent

    # -- plumbing ------------------------------------------------------------------------
    def _inbox(self, thread_id: str) -> Inbox:
        if self._agent is not None and self._agent.status == "running":
            return self._agent.inbox
        return TopicInbox(self.link, thread_id)

    def publish(self, topic: str, event: Event, envelope: Envelope, *, request: bool = False) -> Awaitable[int]:
        """Publish a freshly built ``event`` with ``envelope`` as this participant (await it)."""
        if self._agent is not None:
            return self._agent.publish_as(topic, event, envelope, fresh=True, request=request)
        envelope.sender = self.sender
        envelope.apply_to(event.metadata)
        return self.link.request(topic, event) if request else self.link.send(topic, event)

    async def _ask(self, topic: str, event: Event, envelope: Envelope, collector: ReplyCollector) -> None:
        """Publish a request whose replies ``collector`` waits for; a topic nobody subscribes to
        fails that target at once (over the bridge the hub reports it to the collector later)."""
        if not await self.publish(topic, event, envelope, request=True) and self.link.unrouted(topic):
            collector.no_route(envelope.correlation_id, NoSubscribers(topic))

    def note(self, thread_id: str, type: str, **metadata: str) -> None:
        """An observability event on ``thread.<id>.reply`` (built only when someone listens)."""
        topic = thread_reply_topic(thread_id)
        inst = self.link.instruments
        if inst.watched(topic):
            md = {"thread_id": thread_id, "correlation_id": thread_id, "sender": self.sender, **metadata}
            inst.note(topic, Event(type, source=self.sender, metadata=md, tags=["collab"], priority=40))

    # -- request / reply -----------------------------------------------------------------
    @traced("collab.request_reply", lambda c, topic, *a, **k: {"loom.topic": topic})
    async def request_reply(
        self,
        topic: str,
        payload: Any = None,
        *,
        timeout: float = 5.0,
        thread_id: str | None = None,
        type: str = "collab.request",
        raise_on_timeout: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> Event | None:
        """Publish one request (event type ``type``, extra ``metadata`` such as routing keys) on
        ``topic`` and return the first correlated ``collab.reply``.

        Returns ``None`` on timeout (after publishing ``collab.timeout``), or raises
        :class:`RequestTimeout` when ``raise_on_timeout``.

        Raises:
            NoSubscribers: nothing subscribes to ``topic`` (at once, not after the timeout).
            RuntimeStopped: the runtime stopped while waiting.
        """
        timeout = _check_timeout(timeout)  # the topic is validated by publish (before anything waits)
        thread_id = thread_id or f"req-{new_event_id()}"
        cid = new_event_id()
        collector = ReplyCollector({cid: topic}, _REPLY, _got_one)
        supervisor = self.link.supervisor
        inbox = self._inbox(thread_id)
        inbox.add(collector)
        try:
            supervisor.watch(collector, timeout)  # expired at the deadline; failed at once by the runtime's stop
            if metadata:
                event = make_event(type, payload, source=self.sender, tags=_TAGS, metadata=dict(metadata))
            else:
                event = make_event(type, payload, source=self.sender, tags=_TAGS)
            env = Envelope(thread_id, cid, "", inbox.reply_to, DEFAULT_TTL, 0, event.timestamp_ms)
            await self._ask(topic, event, env, collector)
            if await collector.wait():
                return collector.events[0]
        finally:
            inbox.discard(collector)
            supervisor.unwatch(collector)
        self.note(thread_id, "collab.timeout", reason="request_reply_timeout", topic=topic)
        if raise_on_timeout:
            raise RequestTimeout("request_reply", thread_id, f"no reply on {topic!r} within {timeout:g}s")
        return None

    # -- fan-out / fan-in ----------------------------------------------------------------
    @traced("collab.fanout", lambda c, topics, *a, strategy="all", **k: {"loom.collab.strategy": str(strategy)})
    async def fanout_fanin(
        self,
        topics: Sequence[str],
        payload: Any = None,
        *,
        strategy: Strategy | str | tuple[str, int] = "all",
        timeout: float = 5.0,
        thread_id: str | None = None,
        type: str = "collab.request",
        raise_on_timeout: bool = False,
    ) -> FanoutResult:
        """Send one request per topic, collect correlated replies by ``strategy`` until ``timeout``.

        Partial results are returned, not raised (unless ``raise_on_timeout`` and unsatisfied).

        Raises:
            NoSubscribers: nothing subscribes to any of the topics (at once).
            RuntimeStopped: the runtime stopped while waiting.
        """
        if isinstance(topics, str):
            raise UsageError("fanout_fanin needs a list of topics, not a single string")
        targets = tuple(topics)
        if not targets:
            raise UsageError("fanout_fanin needs at least one topic")
        for t in targets:
            validate_topic(t)
        strat = Strategy.parse(strategy)
        timeout = _check_timeout(timeout)
        thread_id = thread_id or f"fan-{new_event_id()}"
        cids = {f"{thread_id}:{i}": t for i, t in enumerate(targets)}
        n = len(targets)
        collector = ReplyCollector(cids, _REPLY, lambda c: strat.done(len(c.events), c.answered, n))
        start = time.monotonic()
        supervisor = self.link.supervisor
        inbox = self._inbox(thread_id)
        inbox.add(collector)
        try:
            supervisor.watch(collector, timeout)
            for cid, topic in cids.items():
                env = Envelope(thread_id=thread_id, correlation_id=cid, reply_to=inbox.reply_to)
                await self._ask(topic, make_event(type, payload, source=self.sender, tags=_TAGS), env, collector)
            await collector.wait()
        finally:
            inbox.discard(collector)
            supervisor.unwatch(collector)
        replied = {collector.targets[c] for c in collector.per_cid}
        satisfied = strat.satisfied(len(collector.events), collector.answered, n)
        result = FanoutResult(
            thread_id=thread_id,
            strategy=strat,
            targets=targets,
            replies=list(collector.events),
            responders=[e.metadata.get("sender", "") for e in collector.events],
            reply_topics=list(collector.labels),
            answered=tuple(t for t in targets if t in replied),
            missing=tuple(t for t in targets if t not in replied),
            satisfied=satisfied,
            elapsed_s=time.monotonic() - start,
        )
        self.note(
            thread_id,
            "collab.summary",
            received=str(len(result.replies)),
            strategy=str(strat),
            satisfied=str(satisfied).lower(),
        )
        if not satisfied:
            self.note(thread_id, "collab.timeout", reason="fanout_timeout", missing=",".join(result.missing))
            if raise_on_timeout:
                raise CollabTimeout(
                    "fanout_fanin", thread_id, f"strategy {strat} not met; missing {list(result.missing)}"
                )
        return result

    # -- barrier -------------------------------------------------------------------------
    @traced("collab.barrier", lambda c, name, parties, *a, **k: {"loom.collab.barrier": name})
    async def barrier(
        self,
        name: str,
        parties: int | Iterable[str],
        *,
        timeout: float = 10.0,
        participant: str | None = None,
        raise_on_timeout: bool = False,
    ) -> BarrierResult:
        """Wait until ``parties`` participants (a count, or their names) called ``barrier(name, ...)``.

        Each participant announces itself on ``collab.barrier.<name>``; a participant already
        waiting answers a newcomer with ``present``, so late arrivals learn who is there.
        """
        me = participant or self.sender
        topic = f"collab.barrier.{name}"
        validate_topic(topic)
        timeout = _check_timeout(timeout)
        named = None if isinstance(parties, int) else tuple(dict.fromkeys(parties))
        need = parties if isinstance(parties, int) else len(named or ())
        if need < 1:
            raise UsageError(f"a barrier needs at least one party, got {parties!r}")
        if named is not None and me not in named:
            raise UsageError(f"participant {me!r} is not one of the barrier's parties {list(named)}")
        arrived: dict[str, None] = {}
        start = time.monotonic()

        def complete() -> bool:
            return all(p in arrived for p in named) if named is not None else len(arrived) >= need

        async def announce(kind: str) -> None:
            md = {"participant": me, "barrier": name, "parties": str(need)}
            ev = Event(f"collab.barrier.{kind}", source=self.sender, metadata=md, tags=["collab"])
            await self.link.publish(topic, ev)

        with self.link.supervisor.guard():
            sub = self.link.subscribe(
                topic,
                qos=QoS.BATCHED,
                maxsize=max(64, 4 * need),
                types=("collab.barrier.arrive", "collab.barrier.present"),
                name="collab",
            )
            try:
                await announce("arrive")
                async with asyncio.timeout(timeout):
                    while not complete():
                        _, ev = await sub.get()
                        who = ev.metadata.get("participant", "")
                        if not who:
                            continue
                        new = who not in arrived
                        arrived[who] = None
                        if new and who != me and ev.type == "collab.barrier.arrive":
                            await announce("present")
            except TimeoutError:
                pass
            finally:
                sub.close()
        ok = complete()
        missing = tuple(p for p in named if p not in arrived) if named is not None else ()
        result = BarrierResult(
            name=name,
            parties=need,
            arrived=tuple(sorted(arrived)),
            missing=missing,
            ok=ok,
            elapsed_s=time.monotonic() - start,
        )
        if not ok:
            detail = f"missing {list(missing)}" if named is not None else f"{len(arrived)} of {need} arrived"
            if self.link.instruments.watched(topic):
                md = {"reason": "barrier_timeout", "barrier": name, "participant": me, "detail": detail}
                self.link.instruments.note(
                    topic, Event("collab.timeout", source=self.sender, tags=["collab"], metadata=md)
                )
            if raise_on_timeout:
                raise CollabTimeout("barrier", name, detail)
        return result
