"""The runtime's status as a small record with an HTML panel, and an awaitable handle for
work a magic starts in the background."""

from __future__ import annotations

import asyncio
import html
from collections.abc import Coroutine, Generator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.runtime import Loom

__all__ = ["Pending", "RuntimeStatus", "status_of", "track"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeStatus:
    """What ``%loom status`` shows (``status["running"]`` works like a dict)."""

    name: str
    state: str
    running: bool
    uptime_s: float
    agents: dict[str, int]
    subscriptions: int
    published: int
    delivered: int
    dropped: int
    tasks: int

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        agents = ", ".join(f"{n} {s}" for s, n in sorted(self.agents.items())) or "none"
        rows = [
            ("state", f"{self.state} for {self.uptime_s:.1f}s"),
            ("agents", agents),
            ("bus", f"{self.published} published, {self.delivered} delivered, {self.dropped} dropped"),
            ("subscriptions", self.subscriptions),
            ("tasks", self.tasks),
        ]
        body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        return (
            f"<div class='loom-widget loom-status'><div class='loom-head'>Loom {html.escape(self.name)}</div>"
            f"<table class='loom-table'>{body}</table></div>"
        )


def status_of(rt: Loom) -> RuntimeStatus:
    stats = rt.bus.stats()
    counts: dict[str, int] = {}
    for agent in rt.agents:
        counts[agent.status] = counts.get(agent.status, 0) + 1
    return RuntimeStatus(
        name=rt.name,
        state=rt.state,
        running=rt.running,
        uptime_s=rt.uptime_s,
        agents=counts,
        subscriptions=stats.subscriptions,  # type: ignore[union-attr]
        published=stats.published,  # type: ignore[union-attr]
        delivered=stats.delivered,  # type: ignore[union-attr]
        dropped=stats.dropped_total,  # type: ignore[union-attr]
        tasks=len(rt.tasks),
    )


class Pending:
    """Background work started by a magic: ``await`` it to wait; its repr says where it is."""

    def __init__(self, what: str, task: asyncio.Task[Any]) -> None:
        self.what = what
        self.task = task

    def __await__(self) -> Generator[Any, None, Any]:
        return self.task.__await__()

    def done(self) -> bool:
        return self.task.done()

    def result(self) -> Any:
        return self.task.result()

    def __repr__(self) -> str:
        if not self.task.done():
            return f"<{self.what}: running in the background; `await` this to wait>"
        if self.task.cancelled():
            return f"<{self.what}: cancelled>"
        exc = self.task.exception()
        return f"<{self.what}: failed: {exc!r}>" if exc else f"<{self.what}: done>"


def track(what: str, coro: Coroutine[Any, Any, Any]) -> Pending:
    """Run ``coro`` on the running loop in the background (reported if it fails)."""
    from loom.launch import _detach

    return Pending(what, _detach(coro, f"loom.notebook:{what}"))
