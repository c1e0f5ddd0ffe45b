"""What the bus tells the runtime's :class:`~loom.telemetry.seam.Instruments`.

With telemetry on, each publish is a ``publish`` span and what is delivered is a copy of the
event carrying the span's trace keys; the per-topic counters the bus keeps anyway are the sources
of the ``loom.bus.*`` metrics. With telemetry off none of this runs: ``publish`` tests one attribute.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.events.event import Event
    from loom.events.stats import _Route
    from loom.telemetry.seam import Instruments

__all__ = ["BusTelemetry"]

# Set while a traced publish re-enters publish() with the event carrying its span (per task).
_TRACED: contextvars.ContextVar[bool] = contextvars.ContextVar("loom_bus_traced", default=False)


class BusTelemetry:
    """The EventBus's side of the instrumentation seam (a base class of :class:`EventBus`)."""

    instruments: Instruments
    _closed: bool
    _routes: dict[str, _Route]
    _evicted: _Route

    def _instrument(self) -> None:
        inst = self.instruments
        if inst._publish is None:  # notes go to this bus unless the seam was bound elsewhere
            inst.bind(self.publish_nowait, self._watched)  # type: ignore[attr-defined]
        for name, fn in self._sources():
            inst.observe(name, fn)

    def _uninstrument(self) -> None:
        """A closed bus is no longer a metric source (its runtime's counters end with it)."""
        for name, fn in self._sources():
            self.instruments.forget(name, fn)

    def _sources(self) -> list[tuple[str, Any]]:
        return [
            ("loom.bus.published", self._observe_published),
            ("loom.bus.delivered", self._observe_delivered),
            ("loom.bus.dropped", self._observe_dropped),
        ]

    def _watched(self, topic: str) -> bool:
        return not self._closed and self.has_subscribers(topic)

    def _routes_now(self) -> list[_Route]:
        return [*list(self._routes.values()), self._evicted]  # a copy: exporters read from their own thread

    def _observe_published(self) -> list[tuple[float, dict[str, str]]]:
        return [(r.published, {"loom.topic": r.topic}) for r in self._routes_now() if r.published]

    def _observe_delivered(self) -> list[tuple[float, dict[str, str]]]:
        return [(r.delivered, {"loom.topic": r.topic}) for r in self._routes_now() if r.delivered]

    def _observe_dropped(self) -> list[tuple[float, dict[str, str]]]:
        return [
            (n, {"loom.topic": r.topic, "loom.reason": k})
            for r in self._routes_now()
            for k, n in list(r.dropped.items())
        ]

    # -- traced publishing (telemetry on) ---------------------------------------------------
    def _trace(self, topic: str, event: Event) -> tuple[Any, contextvars.Token[bool], Event]:
        """Open the ``publish`` span: it continues the current span (a publish inside a handled
        event) or else the trace the event carries (from another process); the event goes out as
        a copy carrying the span's trace keys, so its handlers continue the trace."""
        tracer = self.instruments.tracer
        assert tracer is not None
        md = event.metadata
        attrs = {
            "loom.topic": topic,
            "loom.event.type": event.type,
            "loom.event.id": event.id,
            "loom.agent": md.get("sender") or event.source,
            "loom.component": "bus",
        }
        span = tracer.span("publish", attrs, None if tracer.in_span() else md)
        span.__enter__()
        copy = dict(md)
        span.inject(copy)
        return span, _TRACED.set(True), event._with_metadata(copy)

    @staticmethod
    def _untrace(span: Any, token: contextvars.Token[bool], delivered: int, exc: BaseException | None = None) -> None:
        _TRACED.reset(token)
        if exc is None:
            span.set("loom.delivered", delivered)
            span.__exit__(None, None, None)
        else:
            span.__exit__(type(exc), exc, exc.__traceback__)

    async def _publish_traced(self, topic: str, event: Event, timeout: float | None) -> int:
        span, token, traced = self._trace(topic, event)
        try:
            delivered = await self.publish(topic, traced, timeout=timeout)
        except BaseException as exc:
            self._untrace(span, token, 0, exc)
            raise
        self._untrace(span, token, delivered)
        return delivered

    def _publish_traced_nowait(self, topic: str, event: Event) -> int:
        span, token, traced = self._trace(topic, event)
        try:
            delivered = self.publish_nowait(topic, traced)
        except BaseException as exc:
            self._untrace(span, token, 0, exc)
            raise
        self._untrace(span, token, delivered)
        return delivered
