"""Instruments: the one instrumentation point of a runtime.

The bus, the agent core, the tool registry, the collaboration primitives, the bridge (both
ends), the LLM client, the router and the cognitive loop report through the :class:`Instruments`
they were given, and through nothing else:

- ``span(name, attrs, parent=metadata)``: an operation with a duration (a publish, a handled
  event, a tool call, an LLM call, a collaboration primitive, a bridge hop). A shared no-op
  unless telemetry is on (:func:`loom.telemetry.init_telemetry`), which plugs a tracer into every
  live ``Instruments`` (OpenTelemetry's providers are process-wide, so telemetry is too).
- ``note(topic, event)``: a runtime event for inspectors (``tool.call``, ``system.agent.<id>``,
  ``agent.<id>.cognitive``, ``router.decisions``, ...). It is published on the runtime's bus when
  something subscribes there (a widget, the event recorder) and then also added to the current
  span as a span event when tracing. ``watched(topic)`` first, so nobody builds an event that
  nobody reads.
- ``observe(name, fn)``: a source of a metric read at collection time (bus counters, mailbox
  depths, tool counters, bridge connections): nothing is counted twice on the hot path.
- ``record(name, value, attrs)``: a histogram sample (delivery latency), a no-op when off.

With telemetry off a span is one attribute test and a shared object; a note one cached route
lookup on the bus.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from loom.events.event import Event

__all__ = [
    "NOOP_SPAN",
    "Instruments",
    "Tracer",
    "bare_agent",
    "current_collector",
    "live_instruments",
    "retired",
    "set_tracer",
    "telemetry_enabled",
]

log = logging.getLogger("loom.telemetry")
Observation = tuple[float, Mapping[str, str]]
ObserveFn = Callable[[], Iterable[Observation]]


class Tracer(Protocol):
    """What telemetry plugs in (:class:`loom.telemetry.tracing.OtelTracer`)."""

    def span(self, name: str, attrs: Mapping[str, Any] | None, parent: Mapping[str, str] | None) -> Any: ...

    def in_span(self) -> bool: ...

    def inject(self, metadata: dict[str, str]) -> None: ...

    def add_event(self, name: str, attrs: Mapping[str, Any]) -> None: ...

    def record(self, name: str, value: float, attrs: Mapping[str, str]) -> None: ...


class _NoopSpan:
    """The span of a runtime with telemetry off: a context manager that records nothing."""

    __slots__ = ()
    recording = False

    def __enter__(self) -> _NoopSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set(self, key: str, value: Any) -> None:
        return None

    def fail(self, message: str) -> None:
        return None

    def inject(self, metadata: dict[str, str]) -> None:
        return None


NOOP_SPAN = _NoopSpan()

_tracer: Tracer | None = None
_retired: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}  # counts of closed parts, per metric
_collector: Any = None  # the process's SpanCollector once init_telemetry() made it
_live: weakref.WeakSet[Instruments] = weakref.WeakSet()


class Instruments:
    """The instrumentation point handed to a runtime's parts (``rt.instruments``).

    Args:
        publish: ``fn(topic, event)`` that never waits (a bus's ``publish_nowait``): where notes go.
        watched: ``fn(topic) -> bool``: whether a note on ``topic`` would reach anyone.
    """

    __slots__ = ("__weakref__", "_observers", "_publish", "_watched", "tracer", "untraced")

    def __init__(
        self,
        publish: Callable[[str, Event], Any] | None = None,
        watched: Callable[[str], bool] | None = None,
    ) -> None:
        self.tracer: Tracer | None = _tracer
        self._publish = publish
        self._watched = watched
        # topics whose publishes are never spans: a stream of 50 audio chunks a second would make
        # 50 traces a second of nothing but themselves (the voice pipeline adds its audio topics)
        self.untraced: set[str] = set()
        self._observers: dict[str, list[tuple[ObserveFn, bool]]] = {}
        _live.add(self)

    def bind(self, publish: Callable[[str, Event], Any], watched: Callable[[str], bool]) -> None:
        """Send notes to ``publish`` when ``watched(topic)`` (a bus binds its own instruments)."""
        self._publish = publish
        self._watched = watched

    # -- spans ---------------------------------------------------------------------------
    def span(
        self, name: str, attrs: Mapping[str, Any] | None = None, *, parent: Mapping[str, str] | None = None
    ) -> Any:
        """A context manager around one operation; ``parent``: event metadata whose trace keys
        (``trace_id``, ``span_id``, ``trace_flags``) continue a trace begun elsewhere. The span
        is current inside the block (what is published there carries it). ``.set(key, value)``
        adds an attribute, ``.fail(message)`` marks it failed, ``.inject(metadata)`` writes its keys."""
        tracer = self.tracer
        if tracer is None:
            return NOOP_SPAN
        return tracer.span(name, attrs, parent)

    def inject(self, metadata: dict[str, str]) -> None:
        """Write the current span's trace keys into ``metadata`` (no-op when off or outside a span)."""
        tracer = self.tracer
        if tracer is not None:
            tracer.inject(metadata)

    # -- runtime events ------------------------------------------------------------------
    def watched(self, topic: str) -> bool:
        """Whether a note on ``topic`` would reach anyone on the bus: build it only then."""
        watched = self._watched
        return watched is not None and watched(topic)

    def note(self, topic: str, event: Event) -> None:
        """Publish a runtime event for inspectors (never waits; a full queue drops, counted); with
        tracing on it is also a span event of the current span (not a streamed token: a span keeps
        128 events)."""
        tracer = self.tracer
        if tracer is not None and not event.type.endswith("token"):
            tracer.add_event(event.type, {"loom.topic": topic})
        if self._publish is not None:
            self._publish(topic, event)

    # -- metrics -------------------------------------------------------------------------
    def observe(self, name: str, fn: ObserveFn, *, gauge: bool = False) -> None:
        """Register ``fn() -> [(value, attributes), ...]`` as a source of the metric ``name``
        (cumulative counts, unless ``gauge``: a level such as a queue's depth)."""
        self._observers.setdefault(name, []).append((fn, gauge))

    def forget(self, name: str, fn: ObserveFn) -> None:
        """Unregister what :meth:`observe` registered (a part that closed). A counter's last values
        are kept as retired counts of the process, so a cumulative metric never goes down."""
        fns = self._observers.get(name, [])
        for entry in [e for e in fns if e[0] == fn]:
            fns.remove(entry)
            if not entry[1]:
                kept = _retired.setdefault(name, {})
                for value, attrs in _read(fn):
                    key = tuple(sorted(attrs.items()))
                    kept[key] = kept.get(key, 0) + value

    def observations(self, name: str) -> list[Observation]:
        """The current values of ``name`` from every registered source (a source that raises is
        skipped, and logged at debug level)."""
        out: list[Observation] = []
        for fn, _ in list(self._observers.get(name, ())):
            out.extend(_read(fn))
        return out

    def record(self, name: str, value: float, attrs: Mapping[str, str]) -> None:
        """One histogram sample (e.g. delivery latency); a no-op when telemetry is off."""
        tracer = self.tracer
        if tracer is not None:
            tracer.record(name, value, attrs)

    def __repr__(self) -> str:
        return f"<Instruments tracing={'on' if self.tracer is not None else 'off'}>"


def set_tracer(tracer: Tracer | None) -> None:
    """Plug ``tracer`` into every live and future :class:`Instruments` (``None``: telemetry off)."""
    global _tracer
    _tracer = tracer
    for inst in list(_live):
        inst.tracer = tracer


def live_instruments() -> list[Instruments]:
    """Every :class:`Instruments` still alive in this process (metric collection reads them)."""
    return list(_live)


def _read(fn: ObserveFn) -> list[Observation]:
    try:
        return list(fn())
    except Exception:  # noqa: BLE001 - a metric source must never break collection (maybe on an exporter's thread)
        log.debug("a metric source failed", exc_info=True)
        return []


def retired(name: str) -> list[Observation]:
    """The final counts of the parts that closed (the metric readers add them to the live ones)."""
    return [(v, dict(k)) for k, v in list(_retired.get(name, {}).items())]


def bare_agent(name: str) -> str:
    """An agent as spans and lanes name it: its id, whether a part said ``agent.ann`` (a sender)
    or ``ann``; a part publishing as ``loom.tools`` is the part ``tools``."""
    return name.removeprefix("agent.").removeprefix("loom.")


def telemetry_enabled() -> bool:
    """Whether spans are being made now (``init_telemetry()`` ran and telemetry is not off)."""
    return _tracer is not None


def current_collector() -> Any:
    """The process's :class:`~loom.telemetry.SpanCollector`, or None if telemetry was never
    initialised; never turns telemetry on (what an inspector asks before it draws)."""
    return _collector
