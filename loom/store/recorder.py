"""Recorder: a runtime part that writes bus traffic into an :class:`EventLog`, off the hot path.

The publisher only appends to the recorder's subscription (a BACKGROUND queue: no drops; a
publisher waits for room only if SQLite falls behind for a whole queue's worth). A task drains it
in batches, stamps each batch with the time, and hands it to one writer thread that owns the
SQLite connection and commits each batch in one transaction. Up to two batches are in flight, so
the drain task keeps taking (and stamping) new events while the thread writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.errors import RuntimeStopped, UsageError
from loom.events.bus import EventBus
from loom.events.event import Event
from loom.events.qos import QoS
from loom.events.subscription import Subscription
from loom.events.topics import validate_pattern
from loom.store.eventlog import EventLog

__all__ = ["Recorder", "RecorderStats"]

log = logging.getLogger("loom.store")

_IN_FLIGHT = 2  # batches handed to the writer thread and not yet committed


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """Counters of a :class:`Recorder`: ``dropped`` counts events lost to the log (should be 0)."""

    recorded: int
    dropped: int
    batches: int
    pruned: int
    queued: int
    write_errors: int


class Recorder:
    """Record the events published on ``bus`` whose topics match ``topics`` into the log at ``path``.

    ``Loom(record="session.db")`` makes one; or ``await rt.add_component(Recorder(rt.bus, "s.db"))``.
    Recording starts at :meth:`start` and ends at :meth:`aclose`, which writes everything queued.

    Args:
        bus: the bus to record.
        path: the log file (an existing log is appended to, in a new session).
        topics: patterns to record (default everything, ``">"``).
        max_bytes / max_age_s: retention (see :class:`EventLog`), applied after each batch.
        batch_size: most events per transaction.
        maxsize: the recorder's queue bound (beyond it, publishers wait: nothing is dropped).
        spawn: who runs the drain task (the runtime's supervisor); a plain task when omitted.

    Raises:
        UsageError: bad topics or sizes. :class:`EventLogError` (at :meth:`start`): the file is unusable.
    """

    name = "recorder"

    def __init__(
        self,
        bus: EventBus,
        path: str | Path,
        topics: Iterable[str] | str = (">",),
        *,
        max_bytes: int | None = None,
        max_age_s: float | None = None,
        batch_size: int = 4096,
        maxsize: int = 65_536,
        spawn: Callable[..., asyncio.Task[Any]] | None = None,
    ) -> None:
        self.topics = (topics,) if isinstance(topics, str) else tuple(topics)
        if not self.topics:
            raise UsageError('record_topics needs at least one pattern (">" records everything)')
        for pattern in self.topics:
            validate_pattern(pattern)  # a bad pattern fails at Loom(...), not later at start()
        if batch_size.__class__ is not int or batch_size < 1 or maxsize.__class__ is not int or maxsize < batch_size:
            raise UsageError(f"need 1 <= batch_size <= maxsize, got {batch_size!r}, {maxsize!r}")
        self.bus = bus
        self.path = Path(path).absolute()
        self._retention = {"max_bytes": max_bytes, "max_age_s": max_age_s}
        self._batch_size = batch_size
        self._maxsize = maxsize
        self._spawn = spawn
        self._log: EventLog | None = None
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._opening: asyncio.Future[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._session = 0
        self._t0 = 0
        self._recorded = 0
        self._batches = 0
        self._lost = 0  # taken from the queue but not written (a write failed)
        self._write_errors = 0
        self._pruned = 0
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the log (a new session) and begin recording. Idempotent.

        Raises:
            EventLogError: the file is not a usable event log (it was not changed).
            UsageError: closed already.
        """
        if self._closed:
            raise UsageError("this Recorder is closed; make a new one")
        if self._opening is None:
            # Shielded: a stop() that comes while the file opens waits for it, then drains.
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)

    async def _open(self) -> None:
        # Subscribe before the file opens so nothing published meanwhile is missed.
        self._sub = self.bus.subscribe(self.topics, qos=QoS.BACKGROUND, maxsize=self._maxsize, name="recorder")
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="loom-recorder")
        try:
            self._log = await self._call(lambda: EventLog(self.path, **self._retention))
            self._session = await self._call(self._log.new_session)
        except BaseException:
            await self._release()
            raise
        self._t0 = time.monotonic_ns()
        if self._spawn is not None:
            try:
                self._task = self._spawn(self._drain(), name="loom.recorder")
                return
            except RuntimeStopped:
                pass  # opened while the runtime stops: our own task, which aclose() awaits
        self._task = asyncio.create_task(self._drain(), name="loom.recorder")

    async def aclose(self) -> None:
        """Stop recording: write what is queued, then close the log. Idempotent."""
        self._closed = True
        if self._opening is not None:
            try:
                await asyncio.shield(self._opening)
            except Exception:  # noqa: BLE001 - start() reported it; nothing was opened
                pass
        if self._sub is not None:
            self._sub.close()  # the drain task empties the queue, then ends
        task, self._task = self._task, None
        if task is not None:
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
        await self._release()

    async def _release(self) -> None:
        if self._sub is not None:
            self._sub.close(discard="closed")  # only non-empty if the drain task died: counted as dropped
        db, self._log = self._log, None
        if db is not None:
            self._pruned = db.pruned
        thread, self._thread = self._thread, None
        if thread is not None:
            if db is not None:
                await asyncio.wrap_future(thread.submit(db.close))
            thread.shutdown(wait=True)  # idle by now: returns at once

    def _call(self, fn: Callable[[], Any]) -> Coroutine[Any, Any, Any]:
        assert self._thread is not None
        return asyncio.wrap_future(self._thread.submit(fn))

    # -- the drain task ------------------------------------------------------------------
    async def _drain(self) -> None:
        sub, db, thread = self._sub, self._log, self._thread
        assert sub is not None and db is not None and thread is not None
        pending: deque[tuple[Future[None], int]] = deque()
        try:
            async for batch in sub.batches(self._batch_size):
                wall, offset = time.time_ns(), time.monotonic_ns() - self._t0
                items = [(d.topic, d.event) for d in batch]
                pending.append((thread.submit(self._write, db, wall, offset, items), len(items)))
                # Wait for the oldest write when two are in flight, or when nothing else is queued
                # (then the counters are current while idle, and the next batch grows meanwhile).
                while pending and (len(pending) >= _IN_FLIGHT or not sub.qsize()):
                    await self._settle(pending.popleft())
        finally:
            # Whatever happens (closing, cancellation), the batches handed over are waited for
            # and counted, so the counters and the file agree.
            while pending:
                await asyncio.shield(self._settle(pending.popleft()))

    def _write(self, db: EventLog, wall: int, offset: int, items: list[tuple[str, Event]]) -> None:
        db.append(self._session, wall, offset, items)
        if db.max_bytes is not None or db.max_age_s is not None:
            try:
                db.apply_retention()
            except Exception:  # the batch is committed: a failed pruning loses nothing, it runs again next batch
                log.exception("recorder: applying retention to %s failed", self.path)

    async def _settle(self, entry: tuple[Future[None], int]) -> None:
        fut, n = entry
        try:
            await asyncio.wrap_future(fut)
        except Exception:
            self._lost += n
            self._write_errors += 1
            log.exception("recorder: writing %d events to %s failed", n, self.path)
        else:
            self._recorded += n
            self._batches += 1

    # -- counters ------------------------------------------------------------------------
    @property
    def stats(self) -> RecorderStats:
        """recorded, dropped (events lost: queue drops + failed writes), batches, pruned (retention),
        queued (waiting to be written), write_errors."""
        sub_dropped = sum(self._sub.stats.dropped.values()) if self._sub is not None else 0
        return RecorderStats(
            recorded=self._recorded,
            dropped=sub_dropped + self._lost,
            batches=self._batches,
            pruned=self._log.pruned if self._log is not None else self._pruned,
            queued=self._sub.qsize() if self._sub is not None else 0,
            write_errors=self._write_errors,
        )

    def __repr__(self) -> str:
        s = self.stats
        return f"<Recorder {str(self.path)!r} {list(self.topics)} recorded={s.recorded} dropped={s.dropped}>"
