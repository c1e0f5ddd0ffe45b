"""OtelTracer: what telemetry plugs into every :class:`~loom.telemetry.seam.Instruments`.

Spans are OpenTelemetry spans, current inside their block (contextvars: nested operations and
what is published there become children). Across agents and processes the trace context rides
in the envelope keys ``trace_id`` (32 hex), ``span_id`` (16 hex) and ``trace_flags`` (2 hex): the
fields of a W3C ``traceparent`` header, each in its own key as upstream Loom writes them.
Unparseable keys are ignored (a new trace starts), never an error.

Metrics derived from spans are recorded when they end (tool calls and errors per tool, LLM
latency and tokens per provider); the others are read from the parts' own counters at
collection time (:mod:`loom.telemetry.metrics`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from loom.telemetry.seam import bare_agent

__all__ = ["OtelTracer", "extract", "inject_current"]

log = logging.getLogger("loom.telemetry")

_KINDS = {
    "publish": SpanKind.PRODUCER,
    "bridge.send": SpanKind.PRODUCER,
    "bridge.forward": SpanKind.PRODUCER,
    "handle": SpanKind.CONSUMER,
    "bridge.receive": SpanKind.CONSUMER,
    "llm.generate": SpanKind.CLIENT,
}
_HEX = frozenset("0123456789abcdef")


def extract(metadata: Mapping[str, str] | None) -> SpanContext | None:
    """The remote span context in an event's envelope keys, or None when absent or malformed."""
    if not metadata:
        return None
    tid, sid = metadata.get("trace_id"), metadata.get("span_id")
    if not tid or not sid or len(tid) != 32 or len(sid) != 16:
        return None
    tid, sid = tid.lower(), sid.lower()
    if not _HEX.issuperset(tid) or not _HEX.issuperset(sid):
        return None
    trace_id, span_id = int(tid, 16), int(sid, 16)
    if not trace_id or not span_id:
        return None
    flags = metadata.get("trace_flags") or "01"
    try:
        sampled = int(flags, 16) & 1
    except ValueError:
        sampled = 1
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(sampled))


def inject_current(metadata: dict[str, str]) -> bool:
    """Write the current span's context into ``metadata``; False when there is no valid one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return False
    metadata["trace_id"] = f"{ctx.trace_id:032x}"
    metadata["span_id"] = f"{ctx.span_id:016x}"
    metadata["trace_flags"] = f"{int(ctx.trace_flags):02x}"
    return True


class _Span:
    """One span as a context manager: started and made current on enter, ended on exit."""

    __slots__ = ("_attrs", "_name", "_parent", "_span", "_start", "_token", "_tracer", "attrs")
    recording = True

    def __init__(self, tracer: OtelTracer, name: str, attrs: Mapping[str, Any] | None, parent: Any) -> None:
        self._tracer = tracer
        self._name = name
        self._attrs = attrs
        self._parent = parent
        self._span: Any = None
        self._token: Any = None
        self._start = 0

    def __enter__(self) -> _Span:
        ctx = None
        remote = extract(self._parent) if self._parent is not None else None
        if remote is not None:
            ctx = trace.set_span_in_context(NonRecordingSpan(remote))
        # kept here too: an unsampled span (a NonRecordingSpan) keeps no attributes, and the
        # span-derived metrics must not depend on sampling
        self.attrs = _clean(self._attrs) or {}
        self._span = span = self._tracer.otel.start_span(
            self._name, context=ctx, kind=_KINDS.get(self._name, SpanKind.INTERNAL), attributes=self.attrs or None
        )
        self._token = otel_context.attach(trace.set_span_in_context(span))
        self._start = time.perf_counter_ns()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span = self._span
        try:
            if exc is not None and span.is_recording():
                if isinstance(exc, Exception):
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{exc.__class__.__name__}: {exc}"))
                else:  # cancelled: not the operation's failure
                    span.set_attribute("loom.cancelled", True)
            on_end = self._tracer.on_end.get(self._name)
            if on_end is not None:
                try:
                    on_end(self.attrs, (time.perf_counter_ns() - self._start) / 1e6, exc)
                except Exception:  # a metric must never break the operation it measures
                    log.exception("telemetry: recording the metrics of a %s span failed", self._name)
        finally:
            try:
                span.end()
            finally:
                otel_context.detach(self._token)

    def inject(self, metadata: dict[str, str]) -> None:
        """Write this span's context into ``metadata`` (what it publishes continues the trace)."""
        ctx = self._span.get_span_context()
        metadata["trace_id"] = f"{ctx.trace_id:032x}"
        metadata["span_id"] = f"{ctx.span_id:016x}"
        metadata["trace_flags"] = f"{int(ctx.trace_flags):02x}"

    def set(self, key: str, value: Any) -> None:
        if key == "loom.agent" and isinstance(value, str):
            value = bare_agent(value)
        if value is not None:
            value = value if isinstance(value, str | int | float | bool) else str(value)
            self.attrs[key] = value
            self._span.set_attribute(key, value)

    def fail(self, message: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, message))


class OtelTracer:
    """Spans on the ``loom`` tracer of ``provider``; ``meters`` records the span-derived metrics."""

    def __init__(self, provider: Any, meters: Any = None) -> None:
        from loom._version import __version__

        self.otel = provider.get_tracer("loom", __version__)
        self.meters = meters
        self.on_end: dict[str, Callable[[Any, float, BaseException | None], None]] = (
            meters.span_hooks() if meters is not None else {}
        )

    def span(self, name: str, attrs: Mapping[str, Any] | None, parent: Mapping[str, str] | None) -> _Span:
        return _Span(self, name, attrs, parent)

    def inject(self, metadata: dict[str, str]) -> None:
        inject_current(metadata)

    def add_event(self, name: str, attrs: Mapping[str, Any]) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, _clean(attrs))

    def record(self, name: str, value: float, attrs: Mapping[str, str]) -> None:
        if self.meters is not None:
            self.meters.record(name, value, attrs)

    @staticmethod
    def in_span() -> bool:
        """Whether a span is current here (a publish inside a handled event continues its trace)."""
        return trace.get_current_span().get_span_context().is_valid


def _clean(attrs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not attrs:
        return None
    out = {k: (v if isinstance(v, str | int | float | bool) else str(v)) for k, v in attrs.items() if v is not None}
    agent = out.get("loom.agent")
    if isinstance(agent, str):  # a sender ("agent.ann") names the agent "ann"
        out["loom.agent"] = bare_agent(agent)
    return out
