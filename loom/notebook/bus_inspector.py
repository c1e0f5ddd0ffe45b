"""BusInspector: a live table of the bus: recent events, per-topic rates and drops."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import traitlets

from loom.errors import InvalidTopic
from loom.events.event import Event
from loom.events.qos import Overflow, QoS
from loom.events.topics import topic_matches, validate_pattern
from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html

__all__ = ["BusInspector"]


def _preview(event: Event, limit: int = 80) -> str:
    text = event.payload[:limit].decode("utf-8", errors="replace")
    return text.replace("\n", "⏎") + ("…" if len(event.payload) > limit else "")


def _clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


class BusInspector(Inspector):
    """Live view of every event on the bus (as seen through a REALTIME subscription to ``>``).

    Args:
        rt: the runtime (default ``loom.current()``).
        pattern: show only topics matching this pattern (editable in the widget).
        types: show only these comma-separated event types ("" = all).
        max_rows: rows kept in the browser (the full counts stay in Python).
        interval: seconds between updates (default 0.1: at most 10 comm messages per second).
    """

    _esm = asset("bus_inspector.js")
    rows = traitlets.List().tag(sync=True)
    topics = traitlets.List().tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)
    missed = traitlets.Int(0).tag(sync=True)
    paused = traitlets.Bool(False).tag(sync=True)
    pattern = traitlets.Unicode(">").tag(sync=True)
    types = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, rt: Any = None, *, pattern: str = ">", types: str = "", max_rows: int = 50, **kw: Any) -> None:
        self.max_rows = max_rows
        super().__init__(rt, title="Loom bus", pattern=pattern, types=types, **kw)

    def _setup(self) -> None:
        self._sub = self.rt.bus.subscribe(
            ">", qos=QoS.REALTIME, maxsize=16_384, overflow=Overflow.DROP_OLDEST, name="bus-inspector"
        )
        self._history: deque[tuple[int, str, Event]] = deque(maxlen=max(500, self.max_rows * 4))
        self._seq = 0
        self._counts: dict[str, int] = {}
        self._rates: dict[str, float] = {}
        self._last_counts: dict[str, int] = {}
        self._last_tick = time.monotonic()
        self._dirty_rows = True
        self.observe(self._filters_changed, names=["pattern", "types", "paused"])

    def _teardown(self) -> None:
        self._sub.close()

    def _filters_changed(self, change: dict[str, Any]) -> None:
        if change["name"] == "pattern":
            try:
                validate_pattern(change["new"] or ">")
                self.error = ""
            except (InvalidTopic, TypeError) as exc:
                self.error = str(exc)
        self._dirty_rows = True

    def _wanted(self, topic: str, event: Event) -> bool:
        pattern = self.pattern or ">"
        if not self.error and pattern != ">" and not topic_matches(pattern, topic):
            return False
        types = [t.strip() for t in self.types.split(",") if t.strip()]
        return not types or event.type in types

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        sub = self._sub
        got = 0
        counts, history = self._counts, self._history
        while sub.qsize():
            topic, event = sub.get_nowait()
            self._seq += 1
            counts[topic] = counts.get(topic, 0) + 1
            history.append((self._seq, topic, event))
            got += 1
        now = time.monotonic()
        dt = now - self._last_tick
        changes: dict[str, Any] = {}
        if got or force or dt >= 1.0:
            if dt >= 0.5 or force:  # rates over at least half a second, smoothed
                for topic, n in counts.items():
                    inst = (n - self._last_counts.get(topic, 0)) / max(dt, 1e-9)
                    self._rates[topic] = 0.5 * self._rates.get(topic, inst) + 0.5 * inst
                self._last_counts = dict(counts)
                self._last_tick = now
                changes["topics"] = self._topic_rows()
            changes["total"] = self._seq
            changes["missed"] = sub.stats.dropped_total
        if (got or self._dirty_rows or force) and not self.paused:
            changes["rows"] = self._rows()
            self._dirty_rows = False
        if not force and set(changes) <= {"total", "missed"} and changes.get("total") == self.total:
            return None
        return changes

    def _rows(self) -> list[dict[str, Any]]:
        picked: list[dict[str, Any]] = []
        for seq, topic, event in reversed(self._history):
            if self._wanted(topic, event):
                md = event.metadata
                picked.append(
                    {
                        "seq": seq,
                        "time": _clock(event.timestamp_ms),
                        "topic": topic,
                        "type": event.type,
                        "sender": md.get("sender") or event.source,
                        "thread": md.get("thread_id", "")[:16],
                        "payload": _preview(event),
                    }
                )
                if len(picked) >= self.max_rows:
                    break
        return picked

    def _topic_rows(self) -> list[dict[str, Any]]:
        busiest = sorted(self._counts.items(), key=lambda kv: -kv[1])[:30]
        out = []
        for topic, n in busiest:
            st = self.rt.bus.stats(topic)
            out.append(
                {
                    "topic": topic,
                    "events": n,
                    "rate": round(self._rates.get(topic, 0.0), 1),
                    "subscriptions": st.subscriptions if st else 0,
                    "dropped": st.dropped_total if st else 0,
                    "drops": dict(st.dropped) if st else {},
                    "depth": st.queue_depth if st else 0,
                }
            )
        return out

    def _static_html(self) -> str:
        rows = [[r["time"], r["topic"], r["type"], r["sender"], r["thread"], r["payload"]] for r in self.rows[:20]]
        note = f"{self.total} events seen; {len(self.topics)} topics"
        return table_html("Loom bus", ["time", "topic", "type", "sender", "thread", "payload"], rows, note)
