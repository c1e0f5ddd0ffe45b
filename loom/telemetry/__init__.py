"""Telemetry: one instrumentation point (:class:`Instruments`), OpenTelemetry spans and metrics.

    collector = loom.telemetry.init_telemetry()   # spans and metrics on, in every runtime
    ...
    collector.spans()                             # the finished spans, newest last

OpenTelemetry is imported by :func:`init_telemetry`, not before: a runtime with telemetry off
loads none of it. docs/observability.md lists span and metric names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loom.telemetry.seam import NOOP_SPAN, Instruments, current_collector, telemetry_enabled

if TYPE_CHECKING:
    from loom.telemetry.collector import SpanCollector, SpanRecord
    from loom.telemetry.otel import disable_telemetry, init_telemetry, metrics_snapshot

__all__ = [
    "NOOP_SPAN",
    "Instruments",
    "SpanCollector",
    "SpanRecord",
    "current_collector",
    "disable_telemetry",
    "init_telemetry",
    "metrics_snapshot",
    "telemetry_enabled",
]

_LAZY = {
    "SpanCollector": "loom.telemetry.collector",
    "SpanRecord": "loom.telemetry.collector",
    "disable_telemetry": "loom.telemetry.otel",
    "init_telemetry": "loom.telemetry.otel",
    "metrics_snapshot": "loom.telemetry.otel",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'loom.telemetry' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
