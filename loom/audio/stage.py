"""Stage: what every audio part is (a source, the VAD, STT, the wake word, TTS).

A stage is a runtime part (``name``, ``async start()``, ``async aclose()``) that talks to the rest
only through the bus: it subscribes to what the stage before it publishes and publishes what
the next one wants (:mod:`loom.audio.topics`). It is given the narrow things it uses: the bus,
a ``spawn`` that makes tasks the runtime owns, the topics. Whatever it holds besides tasks (a
device stream, a worker thread, a model) it releases in :meth:`stop`, which is idempotent.
Counters (``stats``) say what it did and what it dropped; nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from loom.audio.topics import AudioTopics
from loom.errors import UsageError
from loom.events.qos import QoS

if TYPE_CHECKING:
    from loom.events.bus import EventBus
    from loom.events.event import Event
    from loom.events.subscription import Subscription

__all__ = ["Spawn", "Stage"]

log = logging.getLogger("loom.audio")
Spawn = Callable[..., "asyncio.Task[Any]"]


class Stage:
    """Base of the audio stages.

    Args:
        bus: where it subscribes and publishes (``rt.bus``).
        spawn: ``spawn(coro, name=...)`` making a task the runtime owns (``rt.spawn``).
        topics: the topics of the pipeline (defaults as in :class:`AudioTopics`).
    """

    name = "audio.stage"

    def __init__(self, bus: EventBus, *, spawn: Spawn, topics: AudioTopics | None = None) -> None:
        if not callable(getattr(bus, "publish_nowait", None)):
            raise UsageError(f"an audio stage needs the runtime's bus, got {bus!r}")
        if not callable(spawn):
            raise UsageError(f"spawn must be callable (rt.spawn), got {spawn!r}")
        self.bus = bus
        self.spawn = spawn
        self.topics = topics or AudioTopics()
        self.stats: dict[str, int] = {}
        self.running = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._subs: list[Subscription] = []

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def task(self, coro: Coroutine[Any, Any, Any], purpose: str) -> asyncio.Task[Any]:
        """A task of this stage (cancelled by :meth:`stop`), owned by the runtime."""
        t = self.spawn(coro, name=f"loom.{self.name}.{purpose}")
        self._tasks.append(t)
        return t

    def listen(
        self, patterns: str | list[str], types: list[str], handle: Callable[[Event], None], *, maxsize: int = 512
    ) -> Subscription:
        """Run ``handle(event)`` for each event of ``types`` on ``patterns``, in a task of this stage.

        REALTIME: a stage that falls behind never holds up the publisher; what its bounded queue
        cannot take is dropped and counted (:attr:`dropped`). A handler that raises is logged and
        counted (``stats["errors"]``) and the stage goes on. Closed by :meth:`stop`.
        """
        sub = self.bus.subscribe(patterns, qos=QoS.REALTIME, types=types, maxsize=maxsize, name=self.name)
        self._subs.append(sub)
        self.task(self._consume(sub, handle), "listen")
        return sub

    async def _consume(self, sub: Subscription, handle: Callable[[Event], None]) -> None:
        async for delivery in sub:
            try:
                handle(delivery.event)
            except Exception:  # a bug on one event must not stop the stage for good
                self.count("errors")
                log.exception("%s: an event failed", self.name)

    @property
    def dropped(self) -> int:
        """Events the bus dropped because this stage's queue was full."""
        return self.stats.get("dropped", 0) + sum(sum(s.stats.dropped.values()) for s in self._subs)

    async def start(self) -> None:
        """Acquire what the stage needs (a device, a model) and start listening; idempotent."""
        if self.running:
            return
        await self._start()
        self.running = True

    async def stop(self) -> None:
        """Release everything the stage holds (tasks, streams, threads); idempotent."""
        if not self.running and not self._tasks:
            await self._stop()
            return
        self.running = False
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        subs, self._subs = self._subs, []
        for sub in subs:  # what they dropped stays counted
            self.count("dropped", sum(sub.stats.dropped.values()))
            sub.close()
        await self._stop()

    aclose = stop

    async def _start(self) -> None:  # what the stage acquires; raise a clear error when it cannot
        return None

    async def _stop(self) -> None:  # what the stage releases besides its tasks; must be idempotent
        return None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {state} {self.stats}>"
