"""SpanCollector: the last finished spans in memory, for the inspectors.

An OpenTelemetry span processor that keeps each finished span as a :class:`SpanRecord` in a
bounded ring buffer (10 000 by default: the oldest go first, counted in ``evicted``). The
TraceTimeline and ``collector.spans()`` read it; nothing here exports anywhere.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

from loom.telemetry.seam import bare_agent

__all__ = ["SpanCollector", "SpanRecord"]


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One finished span. Ids are lowercase hex (trace 32, span 16); times in ns since the epoch."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str  # "ok" | "error" | "unset"
    error: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[tuple[str, int, Mapping[str, Any]], ...] = ()
    service: str = ""

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def lane(self) -> str:
        """Where a timeline draws it: the agent (bare id, never ``agent.<id>``), else the part."""
        agent = self.attributes.get("loom.agent")
        if agent:  # an agent's own id; a part publishing notes as "loom.tools" is the part "tools"
            return bare_agent(str(agent))
        return str(self.attributes.get("loom.component") or self.name.split(".", 1)[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (what the TraceTimeline widget receives)."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status,
            "error": self.error,
            "lane": self.lane,
            "service": self.service,
            "attributes": {k: _jsonable(v) for k, v in self.attributes.items()},
            "events": [
                {"name": n, "ts_ns": ts, "attributes": {k: _jsonable(v) for k, v in a.items()}}
                for n, ts, a in self.events
            ],
        }


class SpanCollector(SpanProcessor):
    """Keeps the last ``capacity`` finished spans (thread-safe: exporters' threads may end spans).

    ``spans(trace_id=None, limit=None)`` returns them oldest first; ``traces()`` the trace ids,
    newest last. Readers poll (the TraceTimeline does, from its refresh task).
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        # finished spans as the SDK hands them over, turned into SpanRecords when first read: the
        # conversion costs more than the rest of a span's end, and most spans are never read
        self._spans: deque[list[Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.collected = 0
        self.evicted = 0

    # -- SpanProcessor -------------------------------------------------------------------
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            if len(self._spans) == self.capacity:
                self.evicted += 1
            self._spans.append([span, None])
            self.collected += 1

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    # -- reading -------------------------------------------------------------------------
    def spans(self, trace_id: str | None = None, *, limit: int | None = None) -> list[SpanRecord]:
        """Finished spans, oldest first: all, or those of one trace; the last ``limit`` of them."""
        with self._lock:
            entries = tuple(self._spans)
        items: Iterable[SpanRecord] = (e[1] or _converted(e) for e in entries)
        out = [s for s in items if trace_id is None or s.trace_id == trace_id]
        return out[-limit:] if limit is not None else out

    def traces(self) -> list[str]:
        """Trace ids in the buffer, by their first span, newest last."""
        seen: dict[str, None] = {}
        for s in self.spans():
            seen.setdefault(s.trace_id, None)
        return list(seen)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def __len__(self) -> int:
        return len(self._spans)

    def __repr__(self) -> str:
        return f"<SpanCollector {len(self._spans)}/{self.capacity} spans, {self.evicted} evicted>"


def _converted(entry: list[Any]) -> SpanRecord:
    record = entry[1] = _record(entry[0])  # a racing reader converts it twice, to the same value
    return record


def _record(span: ReadableSpan) -> SpanRecord:
    ctx = span.get_span_context()
    parent = span.parent
    status = span.status
    code = status.status_code if status is not None else StatusCode.UNSET
    resource = span.resource.attributes if span.resource is not None else {}
    return SpanRecord(
        trace_id=f"{ctx.trace_id:032x}",
        span_id=f"{ctx.span_id:016x}",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None and parent.is_valid else None,
        name=span.name,
        kind=span.kind.name.lower(),
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        status={StatusCode.OK: "ok", StatusCode.ERROR: "error"}.get(code, "unset"),
        error=(status.description or "") if code is StatusCode.ERROR and status is not None else "",
        attributes=dict(span.attributes or {}),
        events=tuple((e.name, e.timestamp, dict(e.attributes or {})) for e in span.events),
        service=str(resource.get("service.name", "")),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return str(value)
