"""TraceTimeline: the real spans of the span collector, one lane per agent, nested, on a time axis.

    collector = loom.telemetry.init_telemetry()     # or %loom trace on
    timeline = loom.TraceTimeline(rt)               # TraceTimeline(rt, collector, bus_inspector=bi)

Spans come from :class:`loom.telemetry.SpanCollector` (polled each tick: no listener thread ever
touches the widget). Each span goes in the lane :attr:`SpanRecord.lane` names: the agent's bare id
(so an agent has one lane, whoever reports for it) or the part (``bus``, ``tools``, ``llm``,
``bridge``, ``collab``...). Inside a lane a child is drawn one row under its parent; ``depth`` is
its depth in the whole trace. Clicking a span shows its attributes, status, span events and the bus
events of its trace (the ``publish`` spans: topic, type, event id); "show in bus" filters a linked
:class:`~loom.notebook.BusInspector` to the span's topic and event type.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import traitlets

from loom.notebook._assets import asset
from loom.notebook.base import Inspector
from loom.telemetry.seam import current_collector, telemetry_enabled

__all__ = ["HINT_OFF", "TraceTimeline", "axis_ticks", "timeline_model"]

HINT_OFF = "telemetry is off: loom.telemetry.init_telemetry() or %loom trace on"
_PARTS = ("bus", "collab", "tools", "llm", "cognitive", "bridge", "router")  # non-agent lanes, in this order
_MAX_ROWS = 16  # rows per lane at most: a burst of thousands of publishes piles up in the last one
# the attribute that says most about a span, shown in its label
_KEY_ATTR = ("loom.tool", "loom.topic", "gen_ai.request.model", "loom.llm.provider")


def axis_ticks(span_ms: float, target: int = 6) -> list[dict[str, Any]]:
    """Ticks at 1, 2 or 5 × 10^k ms covering ``[0, span_ms]``, labelled in µs, ms or s."""
    span_ms = max(span_ms, 1e-3)
    raw = span_ms / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    ticks, i = [], 0
    while i * step <= span_ms * 1.0001:
        t = i * step
        ticks.append({"t": round(t, 6), "label": _fmt_ms(t, step)})
        i += 1
    return ticks


def _fmt_ms(t: float, step: float) -> str:
    if step >= 100 and t >= 1000:  # seconds once the axis is long enough to need them
        return f"{round(t / 1000, max(0, -math.floor(math.log10(step / 1000)))):g} s"
    return f"{round(t, max(0, -math.floor(math.log10(step)))):g} ms"


def _lane(s: Any) -> str:
    return s.lane  # SpanRecord.lane: an agent's bare id, or the part ("tools", never "loom.tools")


def _label(s: Any) -> str:
    key = next((str(s.attributes[k]) for k in _KEY_ATTR if s.attributes.get(k)), "")
    return f"{s.name} {key}".strip()


def timeline_model(
    spans: Sequence[Any], trace: str = "", agents: Iterable[str] = (), max_spans: int = 1000
) -> dict[str, Any]:
    """What the widget draws, from :class:`SpanRecord` s: ``items`` (ms from the first span),
    ``lanes`` (agents first, then parts), ``ticks`` and ``traces`` (for the trace filter)."""
    traces: dict[str, list[Any]] = {}  # trace id -> [start, end, spans, errors, root span]
    for s in spans:
        t = traces.get(s.trace_id)
        if t is None:
            t = traces[s.trace_id] = [s.start_ns, s.end_ns, 0, 0, s]
        t[0], t[1] = min(t[0], s.start_ns), max(t[1], s.end_ns)
        t[2] += 1
        t[3] += s.status == "error"
        if s.parent_span_id is None:
            t[4] = s
    shown = [s for s in spans if not trace or s.trace_id == trace][-max_spans:]
    by_id = {s.span_id: s for s in shown}

    def depth(s: Any) -> int:
        d, seen = 0, set()
        while s.parent_span_id in by_id and s.span_id not in seen:
            seen.add(s.span_id)
            s, d = by_id[s.parent_span_id], d + 1
        return d

    def lane_parent(s: Any) -> str | None:  # the nearest ancestor drawn in the same lane
        p = by_id.get(s.parent_span_id or "")
        while p is not None and _lane(p) != _lane(s):
            p = by_id.get(p.parent_span_id or "")
        return p.span_id if p is not None else None

    known = set(agents)
    is_agent: dict[str, bool] = {}
    for s in shown:
        lane = _lane(s)
        is_agent[lane] = is_agent.get(lane, False) or lane in known or s.name == "handle"
    t0 = min((s.start_ns for s in shown), default=0)
    t1 = max((s.end_ns for s in shown), default=t0)
    # a bar is at least 1/250 of the axis wide: spans closer than that share no row, so none hides another
    least = max(1, (t1 - t0) // 250)
    rows: dict[str, list[int]] = {}  # lane -> row -> where its last span ends (spans come in start order)
    row_of: dict[str, int] = {}
    items = []
    for s in sorted(shown, key=lambda s: (s.start_ns, -(s.end_ns - s.start_ns))):
        parent = lane_parent(s)
        row = min(row_of[parent] + 1, _MAX_ROWS - 1) if parent in row_of else 0
        lane_rows = rows.setdefault(_lane(s), [])
        end = max(s.end_ns, s.start_ns + least)
        while row < min(len(lane_rows), _MAX_ROWS - 1) and lane_rows[row] > s.start_ns:
            row += 1  # an unrelated span overlaps here (two handlers at once): the next free row
        while len(lane_rows) <= row:
            lane_rows.append(0)
        lane_rows[row] = max(lane_rows[row], end)
        row_of[s.span_id] = row
        items.append(
            {
                "id": s.span_id,
                "parent": s.parent_span_id or "",
                "trace": s.trace_id,
                "name": s.name,
                "label": _label(s),
                "lane": _lane(s),
                "row": row,
                "depth": depth(s),
                "start": round((s.start_ns - t0) / 1e6, 3),
                "end": round((s.end_ns - t0) / 1e6, 3),
                "status": s.status,
            }
        )
    order = sorted(rows, key=lambda lane: (not is_agent[lane], _PARTS.index(lane) if lane in _PARTS else 99, lane))
    lanes = [{"name": lane, "kind": "agent" if is_agent[lane] else "part", "rows": len(rows[lane])} for lane in order]
    trace_list = [  # the newest 200 only: a filter of thousands of entries helps nobody
        {
            "id": tid,
            "label": f"{time.strftime('%H:%M:%S', time.localtime(start / 1e9))} {_label(root)} ({_lane(root)}) · "
            f"{n} spans · {(end - start) / 1e6:.1f} ms" + (f" · {errors} errors" if errors else ""),
        }
        for tid, (start, end, n, errors, root) in list(traces.items())[-200:]
    ]
    if trace and trace in traces and all(t["id"] != trace for t in trace_list):
        trace_list.insert(0, {"id": trace, "label": f"{trace[:8]}… (older)"})  # the chosen one stays choosable
    span_ms = (t1 - t0) / 1e6
    return {
        "items": items,
        "lanes": lanes,
        "ticks": axis_ticks(span_ms),
        "span_ms": round(span_ms, 3),
        "traces": trace_list,
        "t0_ns": t0,
    }


class TraceTimeline(Inspector):
    """The collector's spans as swimlanes (the last ``max_spans``; pick one trace or all).

    Args:
        rt: the runtime (default ``loom.current()``): its agents name the agent lanes.
        collector: the :class:`~loom.telemetry.SpanCollector` (default: the process's, once
            telemetry is on; until then the widget says how to turn it on).
        bus_inspector: a :class:`~loom.notebook.BusInspector` that "show in bus" filters.
        max_spans: spans drawn at most (the newest).
    """

    _esm = asset("trace_timeline.js")
    items = traitlets.List().tag(sync=True)
    lanes = traitlets.List().tag(sync=True)
    ticks = traitlets.List().tag(sync=True)
    span_ms = traitlets.Float(0.0).tag(sync=True)
    traces = traitlets.List().tag(sync=True)
    trace = traitlets.Unicode("").tag(sync=True)  # "" = all traces; set by the front end's filter
    selected = traitlets.Unicode("").tag(sync=True)  # the clicked span's id
    detail = traitlets.Dict().tag(sync=True)
    hint = traitlets.Unicode("").tag(sync=True)
    linked = traitlets.Bool(False).tag(sync=True)  # a BusInspector to filter

    def __init__(
        self,
        rt: Any = None,
        collector: Any = None,
        *,
        bus_inspector: Any = None,
        max_spans: int = 1000,
        interval: float = 0.5,
        **kw: Any,
    ) -> None:
        self.collector = collector
        self.bus_inspector = bus_inspector
        self.max_spans = max_spans
        self._seen: tuple[int, int, str] = (-1, -1, "")
        self._spans: list[Any] = []
        super().__init__(rt, title="Loom traces", interval=interval, linked=bus_inspector is not None, **kw)
        self.observe(self._on_select, names=["selected"])
        # the filter redraws at once (also once the runtime, and so the refresh task, has stopped)
        self.observe(lambda change: self.flush(), names=["trace"])
        self.on_msg(self._on_front_end)

    # -- where the spans are -------------------------------------------------------------
    def _collector(self) -> Any:
        if self.collector is not None:
            return self.collector
        return current_collector()  # never turns telemetry on just to look

    @staticmethod
    def _enabled() -> bool:
        return telemetry_enabled()

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        col = self._collector()
        enabled = self._enabled()
        collected = getattr(col, "collected", 0) if col is not None else -1
        key = (collected, len(col) if col is not None else -1, f"{self.trace}|{enabled}")
        if key == self._seen and not force:
            return None
        self._seen = key
        self._spans = col.spans() if col is not None else []
        if not self._spans:
            hint = HINT_OFF if not enabled else "telemetry is on: no spans yet (they appear as work is done)"
        else:
            hint = "" if enabled else "telemetry is off now: showing the spans collected before"
        if self.trace and not any(s.trace_id == self.trace for s in self._spans):
            self.trace = ""  # the trace left the collector's buffer
        model = timeline_model(self._spans, self.trace, (a.id for a in self.rt.agents), self.max_spans)
        model.pop("t0_ns")
        changes = {**model, "hint": hint}
        if self.selected:
            changes["detail"] = self._detail(self.selected)
        return changes

    # -- interaction ---------------------------------------------------------------------
    def _on_select(self, change: dict[str, Any]) -> None:
        self.detail = self._detail(change["new"]) if change["new"] else {}

    def _detail(self, span_id: str) -> dict[str, Any]:
        """Everything about one span: its record, depth, children, and its trace's bus events."""
        spans = self._spans or (self._collector().spans() if self._collector() is not None else [])
        span = next((s for s in reversed(spans) if s.span_id == span_id), None)
        if span is None:
            return {}
        trace = [s for s in spans if s.trace_id == span.trace_id]
        by_id = {s.span_id: s for s in trace}
        depth, p = 0, span
        while p.parent_span_id in by_id and depth < 1000:
            p, depth = by_id[p.parent_span_id], depth + 1
        t0 = min(s.start_ns for s in trace)
        out = span.to_dict()
        out["attributes"] = dict(sorted(out["attributes"].items()))
        for ev in out["events"]:
            ev["at_ms"] = round((ev.pop("ts_ns") - span.start_ns) / 1e6, 3)
        out.update(
            depth=depth,
            parent_name=by_id[span.parent_span_id].name if span.parent_span_id in by_id else "",
            children=[
                {"id": s.span_id, "label": _label(s), "lane": _lane(s)} for s in trace if s.parent_span_id == span_id
            ],
            topic=str(span.attributes.get("loom.topic", "")),
            event_id=str(span.attributes.get("loom.event.id", "")),
            bus_events=[
                {
                    "span": s.span_id,
                    "at_ms": round((s.start_ns - t0) / 1e6, 3),
                    "topic": str(s.attributes.get("loom.topic", "")),
                    "type": str(s.attributes.get("loom.event.type", "")),
                    "event_id": str(s.attributes.get("loom.event.id", "")),
                    "sender": _lane(s),
                    "delivered": s.attributes.get("loom.delivered", ""),
                }
                for s in sorted(trace, key=lambda s: s.start_ns)
                if s.name == "publish"
            ],
        )
        return out

    def show_in_bus(self, span_id: str | None = None) -> bool:
        """Filter the linked BusInspector to the span's topic (and event type, for a publish)."""
        bi = self.bus_inspector
        d = self._detail(span_id or self.selected) if (span_id or self.selected) else {}
        if bi is None or not d.get("topic"):
            return False
        with bi.hold_trait_notifications():
            bi.pattern = d["topic"]
            bi.types = str(d["attributes"].get("loom.event.type", "")) if d["name"] == "publish" else ""
        bi.flush(force=True)
        return True

    def _on_front_end(self, widget: Any, content: Any, buffers: Any) -> None:
        if isinstance(content, dict) and content.get("cmd") == "show_in_bus":
            self.show_in_bus(str(content.get("span") or ""))

    # -- static views --------------------------------------------------------------------
    def figure(self, ax: Any = None) -> Any:
        """The same swimlanes drawn with matplotlib (for exports and static reports)."""
        import matplotlib.pyplot as plt

        self.flush(force=True)
        if ax is None:
            _, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * max(1, sum(lane["rows"] for lane in self.lanes))))
        y, ys = 0.0, {}
        for lane in reversed(self.lanes):
            ys[lane["name"]] = y
            y += lane["rows"]
        for it in self.items:
            base = ys[it["lane"]] + (self._rows(it["lane"]) - 1 - it["row"])
            color = "#b91c1c" if it["status"] == "error" else "#1a4d8f"
            ax.broken_barh(
                [(it["start"], max(it["end"] - it["start"], self.span_ms / 400))],
                (base + 0.1, 0.8),
                color=color,
                alpha=0.8,
            )
        ax.set_yticks(
            [ys[lane["name"]] + lane["rows"] / 2 for lane in self.lanes], [lane["name"] for lane in self.lanes]
        )
        ax.set_xlabel("ms from the first span")
        ax.set_title(self.hint or f"{len(self.items)} spans in {len(self.lanes)} lanes")
        return ax.figure

    def _rows(self, lane: str) -> int:
        return next((entry["rows"] for entry in self.lanes if entry["name"] == lane), 1)

    def _static_html(self) -> str:
        """Swimlanes as plain HTML (bars are positioned divs): what nbconvert and exports keep."""
        head = f"Loom traces · {len(self.lanes)} lanes · {len(self.items)} spans · {self.span_ms:.1f} ms"
        if not self.items:
            note = f"<div class='loom-note'>{html.escape(self.hint)}</div>"
            return f"<div class='loom-widget'><div class='loom-head'>Loom traces</div>{note}</div>"
        scale = 100 / max(self.span_ms, 1e-6)
        out = [f"<div class='loom-widget'><div class='loom-head'>{head}</div>"]
        for lane in self.lanes:
            bars = "".join(_bar(i, scale) for i in self.items if i["lane"] == lane["name"])
            out.append(
                "<div style='display:flex;border-bottom:1px solid #d1d5db'>"
                f"<div style='width:10em'>{html.escape(lane['name'])}</div>"
                f"<div style='position:relative;flex:1;height:{16 * lane['rows']}px'>{bars}</div></div>"
            )
        return "".join(out) + "</div>"


def _bar(i: dict[str, Any], scale: float) -> str:
    left, width = i["start"] * scale, max((i["end"] - i["start"]) * scale, 0.3)
    color = "#b91c1c" if i["status"] == "error" else "#1a4d8f"
    return (
        f"<div title='{html.escape(i['label'])} {i['end'] - i['start']:.3f} ms' style='position:absolute;"
        f"left:{left:.2f}%;width:{width:.2f}%;top:{16 * i['row'] + 2}px;height:12px;background:{color};opacity:.8'>"
        "</div>"
    )
