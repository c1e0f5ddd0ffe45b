"""TraceTimeline: swimlanes per agent/component, built from bus events and their timestamps.

Until telemetry spans exist, a request and its correlated answer make a span in the
answerer's lane (from the request's arrival to the answer); every other event is a mark in
its sender's lane. Click an item in the widget for its details.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import traitlets

from loom.events.qos import Overflow, QoS
from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html

__all__ = ["TraceTimeline"]

_ANSWERS = {"collab.reply", "collab.proposal", "collab.result"}


class TraceTimeline(Inspector):
    """Swimlanes of the last ``window_s`` seconds (at most ``max_items`` items)."""

    _esm = asset("trace_timeline.js")
    items = traitlets.List().tag(sync=True)
    lanes = traitlets.List().tag(sync=True)
    now_ms = traitlets.Int(0).tag(sync=True)
    window_ms = traitlets.Int(30_000).tag(sync=True)

    def __init__(self, rt: Any = None, *, window_s: float = 30.0, max_items: int = 400, **kw: Any) -> None:
        self.max_items = max_items
        super().__init__(rt, title="Loom timeline", window_ms=int(window_s * 1000), **kw)

    def _setup(self) -> None:
        self._sub = self.rt.bus.subscribe(
            ">", qos=QoS.REALTIME, maxsize=8192, overflow=Overflow.DROP_OLDEST, name="timeline"
        )
        self._items: deque[dict[str, Any]] = deque(maxlen=self.max_items)
        self._open: dict[str, dict[str, Any]] = {}  # correlation id -> the request item
        self._changed = True

    def _teardown(self) -> None:
        self._sub.close()

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        while self._sub.qsize():
            topic, event = self._sub.get_nowait()
            md = event.metadata
            lane = md.get("sender") or event.source or "?"
            cid = md.get("correlation_id", "")
            item = {
                "lane": lane,
                "start": event.timestamp_ms,
                "end": event.timestamp_ms,
                "kind": "mark",
                "label": event.type,
                "topic": topic,
                "thread": md.get("thread_id", ""),
                "id": event.id,
            }
            req = self._open.pop(cid, None) if event.type in _ANSWERS else None
            if req is not None:  # the answer closes a span in the answerer's lane
                item.update(
                    kind="span",
                    start=req["start"],
                    label=f"{req['label']} → {event.type}",
                    detail=f"asked by {req['lane']} on {req['topic']}",
                )
            elif cid and md.get("reply_to"):
                self._open[cid] = item
                if len(self._open) > 1000:
                    self._open.pop(next(iter(self._open)))
            self._items.append(item)
            self._changed = True
        now = int(time.time() * 1000)
        if not (self._changed or force):
            return None
        self._changed = False
        recent = [i for i in self._items if i["end"] >= now - self.window_ms]
        lanes = sorted({i["lane"] for i in recent})
        return {"items": recent, "lanes": lanes, "now_ms": now}

    def _static_html(self) -> str:
        rows = [[i["lane"], i["label"], i["topic"], i["end"] - i["start"]] for i in self.items[-20:]]
        return table_html("Loom timeline", ["lane", "item", "topic", "ms"], rows, f"{len(self.lanes)} lanes")
