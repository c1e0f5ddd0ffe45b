"""Replay: re-publish a recorded :class:`EventLog` onto a bus, in order and (optionally) in time.

Records are published one after another in the order they were recorded (``seq``), so every
topic, and every subscription, sees them in the order the recorded session delivered them. At
``speed=1.0`` each record waits until its offset on the recording's clock has passed since the
replay began (``2.0`` twice as fast; ``"max"`` never waits). Sessions recorded into one file
follow one another without a gap. Reads run in a worker thread, a chunk at a time, up to the
record that was the newest when replay began.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from loom.errors import UsageError
from loom.events.bus import EventBus
from loom.events.topics import topic_matches, validate_pattern
from loom.store.eventlog import EventLog

__all__ = ["ReplayControl", "ReplaySummary", "replay"]

_CHUNK = 2000
_MIN_SLEEP_S = 0.0005  # below this, sleeping costs more precision than it buys


@dataclass(slots=True)
class ReplaySummary:
    """What :func:`replay` did.

    Attributes:
        events: events re-published. skipped: records left out by ``topics``.
        delivered: deliveries the bus made (an event reaching two subscriptions counts twice).
        duration_s: wall time the replay took. recorded_s: the replayed span on the recording's clock.
        first_seq / last_seq: the first and last record replayed (0 when none).
        topics: events per topic.
    """

    events: int = 0
    skipped: int = 0
    delivered: int = 0
    duration_s: float = 0.0
    recorded_s: float = 0.0
    first_seq: int = 0
    last_seq: int = 0
    topics: dict[str, int] = field(default_factory=dict)


class ReplayControl:
    """Pause, step and resume a replay in progress (what the :class:`loom.notebook.ReplayPanel` buttons do).

    While paused, :meth:`step` lets ``n`` more events through at once (time-travel debugging: one
    event, look, the next); :meth:`resume` continues in time from where it stands. ``position`` is
    the last record published and ``recorded_s`` its time on the recording's clock.
    """

    def __init__(self, *, paused: bool = False) -> None:
        self._run = asyncio.Event()
        if not paused:
            self._run.set()
        self._steps = 0
        self.position = 0
        self.recorded_s = 0.0
        self.events = 0
        self.done = False
        self._listeners: list[Callable[[], None]] = []

    @property
    def paused(self) -> bool:
        return not self._run.is_set()

    def pause(self) -> None:
        self._run.clear()
        self._changed()

    def resume(self) -> None:
        self._steps = 0
        self._run.set()
        self._changed()

    def step(self, n: int = 1) -> None:
        """While paused: let ``n`` more events through (ignored while playing)."""
        if n.__class__ is not int or n < 1:
            raise UsageError(f"step needs a count >= 1, got {n!r}")
        if self.paused:
            self._steps += n
            self._run.set()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each published event and each pause/resume."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    async def _gate(self) -> bool:
        """Wait while paused; True when this event was let through by a step (publish it at once)."""
        if self._run.is_set() and not self._steps:
            return False
        await self._run.wait()
        if self._steps:
            self._steps -= 1
            if not self._steps:
                self._run.clear()  # the last step taken: paused again after this event
            return True
        return False

    def _published(self, seq: int, recorded_s: float) -> None:
        self.position, self.recorded_s, self.events = seq, recorded_s, self.events + 1
        self._changed()


async def replay(
    bus: EventBus,
    log: str | Path | EventLog,
    *,
    speed: float | Literal["max"] = 1.0,
    topics: Iterable[str] | str | None = None,
    until: float | None = None,
    control: ReplayControl | None = None,
) -> ReplaySummary:
    """Publish the records of ``log`` onto ``bus``; returns a :class:`ReplaySummary`.

    Args:
        bus: where to publish (a fresh runtime's, usually: ``await rt.replay(...)``).
        log: a log file (opened read-only and closed afterwards) or an open :class:`EventLog`.
        speed: ``1.0`` keeps the recorded timing, ``n`` plays n times faster, ``"max"`` never waits.
        topics: only records whose topic matches one of these patterns (default all).
        until: stop at this many seconds into the recording (on its clock).
        control: a :class:`ReplayControl` to pause, step and resume the replay while it runs.

    Raises:
        UsageError: a bad speed, pattern or until. EventLogError: the file is not a usable log.
    """
    if speed != "max" and (isinstance(speed, bool) or not isinstance(speed, int | float) or not speed > 0):
        raise UsageError(f"speed must be a positive number or 'max', got {speed!r}")
    patterns = None if topics is None else ((topics,) if isinstance(topics, str) else tuple(topics))
    for p in patterns or ():
        validate_pattern(p)
    if until is not None and (isinstance(until, bool) or not isinstance(until, int | float) or until < 0):
        raise UsageError(f"until must be seconds >= 0, got {until!r}")
    opened = not isinstance(log, EventLog)
    db = await asyncio.to_thread(EventLog, log, readonly=True) if opened else log
    assert isinstance(db, EventLog)
    # With tracing on, the replay is one new trace: each re-published event's span hangs under this
    # one (the current span wins over the recorded trace keys), so nothing joins the old traces.
    attrs = {"loom.component": "store", "loom.replay.log": str(db.path), "loom.replay.speed": str(speed)}
    try:
        with bus.instruments.span("replay", attrs):
            return await _publish(bus, db, speed, patterns, until, control)
    finally:
        if opened:
            db.close()
        if control is not None:
            control.done = True
            control._changed()


async def _publish(
    bus: EventBus,
    db: EventLog,
    speed: float | str,
    patterns: tuple[str, ...] | None,
    until: float | None,
    control: ReplayControl | None,
) -> ReplaySummary:
    out = ReplaySummary()
    loop = asyncio.get_running_loop()
    t_start, w_start = loop.time(), time.perf_counter()
    limit_ns = None if until is None else int(until * 1e9)
    session, base_ns, first_ns, at_ns = None, 0, 0, 0
    after = 0
    publish = bus.publish
    # What is in the log now: a log still being recorded (even by this runtime) is not chased.
    last = await asyncio.to_thread(db.last_seq)
    while after < last and (chunk := await asyncio.to_thread(db.read, after, min(_CHUNK, last - after))):
        after = chunk[-1].seq
        for rec in chunk:
            if rec.seq > last:
                break
            if rec.session != session:  # a new session continues the timeline where the last ended
                session, base_ns, first_ns = rec.session, at_ns, rec.offset_ns
            at_ns = base_ns + rec.offset_ns - first_ns
            if limit_ns is not None and at_ns > limit_ns:
                return _finish(out, w_start)
            if patterns is not None and not any(topic_matches(p, rec.topic) for p in patterns):
                out.skipped += 1
                continue
            stepped = False
            if control is not None and (control.paused or control._steps):
                stepped = await control._gate()
                if speed != "max":  # the timeline goes on from here, not from before the pause
                    t_start = loop.time() - at_ns / 1e9 / speed  # type: ignore[operator]
            if speed != "max" and not stepped:
                delay = t_start + at_ns / 1e9 / speed - loop.time()  # type: ignore[operator]
                if delay > _MIN_SLEEP_S:
                    await asyncio.sleep(delay)
                if control is not None and control.paused:  # paused during the wait: hold this event
                    stepped = await control._gate()
                    t_start = loop.time() - at_ns / 1e9 / speed  # type: ignore[operator]
            out.delivered += await publish(rec.topic, rec.event)
            out.events += 1
            out.topics[rec.topic] = out.topics.get(rec.topic, 0) + 1
            out.first_seq = out.first_seq or rec.seq
            out.last_seq = rec.seq
            out.recorded_s = at_ns / 1e9
            if control is not None:
                control._published(rec.seq, out.recorded_s)
    return _finish(out, w_start)


def _finish(out: ReplaySummary, w_start: float) -> ReplaySummary:
    out.duration_s = time.perf_counter() - w_start
    return out
