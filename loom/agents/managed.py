"""ManagedAgent: one agent's core, the same whether it runs in-process or behind the bridge.

The core owns the agent's mailbox (one multi-pattern subscription, BATCHED by default), its one
task that handles events in order (each a ``handle`` span continuing the event's trace), and the
rules around it: ``next_hop`` before the handler (expired events dropped and counted), ``sender =
agent.<id>`` and the hop budget of the event being handled stamped on what it emits, handler errors
contained (logged, counted, noted on ``agent.<id>.error``) under a :class:`RestartPolicy`,
correlated replies taken off the mailbox before they queue (the pending-reply inbox), state saved
(and noted), then the event acknowledged (``mailbox.done``: a durable mailbox in a cluster acks it;
a cancelled handler's is not). It reaches the world only through its ``Link``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import traceback
import types
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from loom.collab.inbox import PendingInbox
from loom.errors import ClosedError, LoomError, RuntimeStopped, UsageError
from loom.events.envelope import Envelope, agent_reply_topic, hop_on
from loom.events.event import Event
from loom.events.qos import DropReason, Overflow, QoS
from loom.events.queue import Delivery
from loom.events.topics import validate_pattern
from loom.telemetry.seam import NOOP_SPAN

if TYPE_CHECKING:
    from loom.agents.behavior import Action, AgentBehavior, AgentConfig
    from loom.agents.link import Link
    from loom.agents.state import AgentState, StateStore
    from loom.collab.inbox import ReplyCollector
    from loom.events.subscription import Subscription

__all__ = ["AgentNotFound", "AgentStatus", "ManagedAgent", "RestartPolicy"]

log = logging.getLogger("loom.agents")
AgentStatus = Literal["created", "running", "stopped", "failed"]
_RECENT_LIMIT = 1024
_Coroutine = types.CoroutineType


class AgentNotFound(UsageError, LookupError):
    """No agent with this id in this runtime."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        super().__init__(f"agent {agent_id!r} not found")


class RestartPolicy:
    """Contain failures: more than ``max_failures`` handler errors within ``window_s`` → ``failed``."""

    __slots__ = ("max_failures", "window_s")

    def __init__(self, max_failures: int = 5, window_s: float = 60.0) -> None:
        if max_failures < 1 or window_s <= 0:
            raise UsageError(f"RestartPolicy needs max_failures >= 1 and window_s > 0, got {max_failures}, {window_s}")
        self.max_failures = max_failures
        self.window_s = window_s

    def __repr__(self) -> str:
        return f"RestartPolicy(max_failures={self.max_failures}, window_s={self.window_s})"


class ManagedAgent:
    """One agent: its record (``rt.agents[id]``, read by inspectors) and its actor loop."""

    def __init__(
        self,
        config: AgentConfig,
        behavior: AgentBehavior,
        state: AgentState,
        *,
        link: Link,
        store: StateStore,
        mailbox_size: int = 1000,
        mailbox_qos: QoS = QoS.BATCHED,
        restart: RestartPolicy | None = None,
        on_change: Callable[[ManagedAgent], None] | None = None,
        durable: bool | None = None,
    ) -> None:
        self.config = config
        self.sender = f"agent.{config.agent_id}"
        self.reply_topic = agent_reply_topic(config.agent_id)
        self._state_topic = f"system.agent.{config.agent_id}.state"
        self.behavior = behavior
        self.state = state
        self.link = link
        self.store = store
        self.status: AgentStatus = "created"
        self.topics: list[str] = [self.reply_topic, *config.topics]
        self.mailbox: Subscription | None = None
        self.mailbox_size = mailbox_size
        self.mailbox_qos = mailbox_qos
        self.durable = durable  # at-least-once in a cluster (None: as the mailbox's QoS says, BACKGROUND is)
        self.restart = restart or RestartPolicy()
        self.task: asyncio.Task[None] | None = None
        self.handled = 0
        self.failed = 0
        self.expired = 0
        self.emitted = 0
        self.late_replies = 0
        self.last_error = ""
        self._failures: deque[float] = deque()
        self._on_change = on_change  # told when its status or topics change (a directory, lifecycle events)
        self.pending: dict[str, ReplyCollector] = {}  # correlation id -> a waiting request's collector
        self._recent: dict[str, None] = {}
        self.inbox = PendingInbox(self.pending, self.reply_topic, self.forget_pending)
        self.current: Event | None = None  # the event being handled, if any

    @property
    def id(self) -> str:
        return self.config.agent_id

    @property
    def mailbox_depth(self) -> int:
        return self.mailbox.qsize() if self.mailbox is not None else 0

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the mailbox, run ``on_init``, start handling events. ``failed`` if ``on_init`` raises."""
        if self.status == "running":
            return
        self.mailbox = self.link.subscribe(
            self.topics,
            qos=self.mailbox_qos,
            maxsize=self.mailbox_size,
            overflow=Overflow.DROP_NEWEST,
            intercept=self._intercept,
            name=self.sender,
            durable=self.mailbox_qos is QoS.BACKGROUND if self.durable is None else self.durable,
        )
        self.status = "running"
        self._failures.clear()
        try:  # start means ready: on_init has run when start() returns (events meanwhile are queued)
            on_init = getattr(self.behavior, "on_init", None)
            if on_init is not None:
                await _maybe_await(on_init(self.config))
        except Exception as exc:  # noqa: BLE001 - on_init is user code: contained, reported
            self._record_failure("", None, exc, fatal=True)
            await self.halt("failed")
            return
        self.task = self.link.supervisor.spawn(self._run(), name=f"loom.agents.run:{self.id}")
        self._changed()

    async def halt(self, status: AgentStatus) -> None:
        """Stop handling events (the current handler is cancelled), discard what is queued (counted
        ``agent_stopped``), fail requests still waiting for replies, run ``on_shutdown``, save state."""
        if self.status != "running":
            return
        self.status = status
        if self.mailbox is not None:
            self.mailbox.close(discard=DropReason.AGENT_STOPPED)
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for cid, collector in list(self.pending.items()):
            collector.fail(ClosedError(f"agent {self.id!r} {status} while a request was waiting for replies"))
            self.forget_pending(cid)
        try:
            on_shutdown = getattr(self.behavior, "on_shutdown", None)
            if on_shutdown is not None:
                await _maybe_await(on_shutdown())
        except Exception as exc:  # contained: a broken on_shutdown must not break stop()
            log.exception("agent %s: on_shutdown failed", self.id)
            self.last_error = f"on_shutdown: {exc!r}"
        self._save_state()
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    # -- dynamic subscriptions -----------------------------------------------------------
    def subscribe(self, pattern: str) -> None:
        """Add a topic pattern at run time.

        Raises:
            InvalidTopic: malformed. UsageError: already subscribed to exactly this pattern.
        """
        validate_pattern(pattern)
        if pattern in self.topics:
            raise UsageError(f"agent {self.id!r} is already subscribed to {pattern!r}")
        if self.mailbox is not None and not self.mailbox.closed:
            self.mailbox.add_pattern(pattern)
        self.topics.append(pattern)
        self._changed()

    def unsubscribe(self, pattern: str) -> None:
        """Remove a topic pattern at run time.

        Raises:
            UsageError: not subscribed, or the private reply topic.
        """
        if pattern == self.reply_topic:
            raise UsageError(f"{pattern!r} is agent {self.id!r}'s private reply topic and cannot be unsubscribed")
        if pattern not in self.topics:
            raise UsageError(f"agent {self.id!r} is not subscribed to {pattern!r}")
        if self.mailbox is not None and not self.mailbox.closed:
            self.mailbox.remove_pattern(pattern)
        self.topics.remove(pattern)
        self._changed()

    # -- emitting ------------------------------------------------------------------------
    def stamp(self, event: Event, envelope: Envelope | None = None) -> Event:
        """A copy of ``event`` carrying ``sender = agent.<id>`` and ``envelope`` (when given; else its
        own, with the hop budget of the event being handled)."""
        md = dict(event.metadata)
        if envelope is None:
            envelope = Envelope.from_metadata(md, event.id)
            parent = self.current
            if parent is not None and "ttl" not in md:  # causal chain: inherit the hop budget
                penv = parent._env or Envelope.from_event(parent)
                envelope.ttl, envelope.hop = penv.ttl, penv.hop
        envelope.sender = self.sender
        envelope.apply_to(md, upstream=self.link.upstream)
        return event._with_metadata(md)

    def publish_as(
        self, topic: str, event: Event, envelope: Envelope | None = None, *, fresh: bool = False, request: bool = False
    ) -> Awaitable[int]:
        """Publish ``event`` on ``topic`` as this agent (sender stamped); await it for the deliveries.

        ``fresh``: the event was just built for this call with its own ``envelope`` (a request, a
        reply, a message in a thread: a conversation someone may wait on) and is not shared yet,
        so the envelope is written into it instead of into a copy. ``request``: a reply is expected
        (see Link.request).
        """
        self.emitted += 1
        link = self.link
        if fresh and envelope is not None:
            envelope.sender = self.sender
            parent = self.current
            if parent is not None and envelope.hop == 0 and parent._env is not None:
                envelope.ttl, envelope.hop = parent._env.ttl, parent._env.hop  # causal: inherit the budget
            envelope.apply_to(event.metadata, upstream=link.upstream)
            # The link's awaitable itself (no frame of ours around it: the request/reply hot path).
            return link.request(topic, event) if request else link.send(topic, event)
        return link.publish(topic, self.stamp(event, envelope))

    # -- the actor loop ------------------------------------------------------------------
    async def _run(self) -> None:
        state, mailbox = self.state, self.mailbox
        assert mailbox is not None
        on_event = self.behavior.on_event
        instruments = self.link.instruments
        async for topic, received in mailbox:
            event = hop_on(received)
            if event is None:
                self.expired += 1
                mailbox.done(received)
                continue
            state.topic = topic
            self.current = event
            with NOOP_SPAN if instruments.tracer is None else instruments.span("handle", parent=event.metadata) as span:
                if span.recording:
                    span.set("loom.agent", self.id)
                    span.set("loom.topic", topic)
                    span.set("loom.event.type", event.type)
                    span.set("loom.event.id", event.id)
                try:
                    actions = on_event(event, state)
                    if actions.__class__ is _Coroutine or (actions is not None and inspect.isawaitable(actions)):
                        actions = await actions
                    self.handled += 1
                    if actions:
                        await self._execute(actions)
                except Exception as exc:  # noqa: BLE001 - handler errors are contained and reported
                    if isinstance(exc, RuntimeStopped) and self.link.supervisor.closed:
                        return  # its own runtime (behind the bridge: its link) is stopping: not the handler's fault
                    span.fail(f"{exc.__class__.__name__}: {exc}")
                    if self._record_failure(topic, event, exc):
                        self.current = None
                        mailbox.done(received)  # contained like any failure: not delivered again
                        await self.halt("failed")
                        return
                finally:
                    self.current = None
            state.touch()
            if state.persistent.dirty:
                self._save_state()
                if instruments.watched(self._state_topic):  # a snapshot for inspectors and the event log
                    instruments.note(self._state_topic, Event.from_json("agent.state", state.snapshot(), source="loom"))
            mailbox.done(received)  # handled (or failed, contained) and saved: acknowledged; a cancelled one is not

    async def _execute(self, actions: Iterable[Action]) -> None:
        from loom.agents.behavior import Action

        for action in actions:
            if not isinstance(action, Action):
                raise UsageError(f"on_event of {self.id!r} returned {action!r}; expected loom.Action items")
            if action.kind == "emit":
                assert action.event is not None
                await self.publish_as(action.topic, action.event)
            else:
                result = await self.link.invoke(action.tool, dict(action.args), caller=self.sender)
                meta = {"action_type": action.tool, "status": "ok" if result.ok else "error", "call_id": result.id}
                err = result.error
                body = {"output": result.output} if result.ok else {"error": f"{err.code}: {err.message}"}
                event = Event.from_json("action_result", body, source=self.sender, metadata=meta, tags=["action"])
                self.link.publish_nowait(self.sender, event)

    def _record_failure(self, topic: str, event: Event | None, exc: Exception, *, fatal: bool = False) -> bool:
        """Count and report a handler error; return whether the agent must move to ``failed``."""
        now = time.monotonic()
        self.failed += 1
        self.last_error = f"{exc.__class__.__name__}: {exc}"
        window = self._failures
        window.append(now)
        while window and now - window[0] > self.restart.window_s:
            window.popleft()
        fatal = fatal or len(window) > self.restart.max_failures
        log.error(
            "agent %s failed on %s (%s)%s",
            self.id,
            topic or "init",
            event.type if event else "-",
            " - giving up" if fatal else "",
            exc_info=exc,
        )
        inst, where = self.link.instruments, f"{self.sender}.error"
        if inst.watched(where):  # the report, for whoever watches (inspectors, the event log)
            body = {
                "agent_id": self.id,
                "error_type": exc.__class__.__name__,
                "error": str(exc),
                "traceback": "".join(traceback.format_exception(exc)[-3:]),
                "topic": topic,
                "event_id": event.id if event else "",
                "event_type": event.type if event else "",
                "failures_in_window": len(window),
                "fatal": fatal,
            }
            inst.note(where, Event("agent.error", json.dumps(body).encode(), source=self.sender, priority=80))
        return fatal

    def _save_state(self) -> None:
        if not self.state.persistent.dirty:
            return
        try:
            self.store.save(self.id, self.state.persistent)
            self.state.persistent.dirty = False
        except (LoomError, OSError) as exc:
            self._record_failure("", self.current, exc)

    # -- replies to this agent's requests ------------------------------------------------
    def forget_pending(self, correlation_id: str) -> None:
        """A request finished: later replies with this id are dropped (counted as late)."""
        self.pending.pop(correlation_id, None)
        self._recent[correlation_id] = None
        if len(self._recent) > _RECENT_LIMIT:
            del self._recent[next(iter(self._recent))]

    def _intercept(self, item: Delivery) -> bool:
        if not self.pending and not self._recent:
            return False
        md = item.event.metadata
        cid = md.get("correlation_id") or md.get("loom.correlation_id")  # loom-py clients write the prefixed key
        if cid is None:
            return False
        collector = self.pending.get(cid)
        if collector is not None:
            return collector.offer(item)
        if cid in self._recent and item.event.type.startswith("collab."):
            self.late_replies += 1
            return True
        return False

    def snapshot(self) -> dict[str, Any]:
        """A JSON-safe summary for inspectors."""
        return {
            "agent_id": self.id,
            "status": self.status,
            "topics": list(self.topics),
            "capabilities": list(self.config.capabilities),
            "mailbox_depth": self.mailbox_depth,
            "mailbox_size": self.mailbox_size,
            "handled": self.handled,
            "failed": self.failed,
            "expired": self.expired,
            "emitted": self.emitted,
            "last_error": self.last_error,
            "state": self.state.snapshot(),
        }

    def __repr__(self) -> str:
        return f"<Agent {self.id} {self.status} handled={self.handled} failed={self.failed}>"


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
