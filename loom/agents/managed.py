"""The runtime's record of one agent, and the failure policy it is held to."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from loom.errors import UsageError
from loom.events.envelope import agent_reply_topic
from loom.events.event import Event
from loom.events.qos import QoS
from loom.events.queue import Delivery

if TYPE_CHECKING:
    from loom.agents.behavior import AgentBehavior, AgentConfig
    from loom.agents.state import AgentState
    from loom.events.subscription import Subscription

__all__ = ["AgentNotFound", "AgentStatus", "ManagedAgent", "RestartPolicy"]

AgentStatus = Literal["created", "running", "stopped", "failed"]
_RECENT_LIMIT = 1024


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
    """The runtime's record of one agent, readable by inspectors (``rt.agents[id]``)."""

    def __init__(self, config: AgentConfig, behavior: AgentBehavior, state: AgentState, **opts: Any) -> None:
        self.config = config
        self.sender = f"agent.{config.agent_id}"
        self.reply_topic = agent_reply_topic(config.agent_id)
        self.behavior = behavior
        self.state = state
        self.status: AgentStatus = "created"
        self.topics: list[str] = [agent_reply_topic(config.agent_id), *config.topics]
        self.mailbox: Subscription | None = None
        self.mailbox_size: int = opts["mailbox_size"]
        self.mailbox_qos: QoS = opts["mailbox_qos"]
        self.restart: RestartPolicy = opts["restart"]
        self.task: asyncio.Task[None] | None = None
        self.handled = 0
        self.failed = 0
        self.expired = 0
        self.emitted = 0
        self.late_replies = 0
        self.last_error = ""
        self._failures: deque[float] = deque()
        # correlation id -> fn(delivery) -> consumed?; fed by the mailbox's intercept hook
        self.pending: dict[str, Callable[[Delivery], bool]] = {}
        self._recent: dict[str, None] = {}
        self.current: Event | None = None  # the event being handled, if any

    @property
    def id(self) -> str:
        return self.config.agent_id

    @property
    def mailbox_depth(self) -> int:
        return self.mailbox.qsize() if self.mailbox is not None else 0

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
        waiter = self.pending.get(cid)
        if waiter is not None:
            return waiter(item)
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
