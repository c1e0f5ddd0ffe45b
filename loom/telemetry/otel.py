"""init_telemetry: OpenTelemetry providers, exporters and the in-memory span collector.

Process-wide, as OpenTelemetry's providers are. The first call builds a tracer provider and a
meter provider (made the global ones unless the application set its own, in which case Loom's
collector joins the application's tracer provider), the :class:`SpanCollector`, and the
exporters the arguments and the standard ``OTEL_*`` variables ask for; then it plugs the tracer
into every runtime's :class:`~loom.telemetry.seam.Instruments`. Later calls return the same
collector, switch telemetry back on if it was off and add span exporters not added yet.

Standard variables honoured: ``OTEL_SDK_DISABLED``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_TRACES_EXPORTER`` and
``OTEL_METRICS_EXPORTER`` (``otlp``, ``console``, ``none``), ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and
the ``_TRACES_``/``_METRICS_`` ones, ``_PROTOCOL`` grpc or http/protobuf, ``_HEADERS``,
``_INSECURE``, ...: read by the exporters themselves), ``OTEL_METRIC_EXPORT_INTERVAL``,
``OTEL_BSP_*``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from loom.errors import UsageError
from loom.telemetry import seam
from loom.telemetry.collector import SpanCollector

__all__ = ["disable_telemetry", "init_telemetry", "metrics_snapshot"]

_lock = threading.Lock()


@dataclass
class _State:
    provider: Any
    meter_provider: Any
    metric_reader: Any
    tracer: Any
    collector: SpanCollector
    exporters: set[str] = field(default_factory=set)


_state: _State | None = None
_flushing: threading.Thread | None = None  # at most one background flush at a time
_disabled_collector: SpanCollector | None = None  # what init_telemetry() returns under OTEL_SDK_DISABLED


def _env_list(name: str, default: str) -> list[str]:
    return [p.strip().lower() for p in os.environ.get(name, default).split(",") if p.strip()]


def _otlp_endpoint_set() -> bool:
    return any(
        os.environ.get(v)
        for v in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        )
    )


def init_telemetry(
    service_name: str | None = None,
    *,
    console: bool | None = None,
    otlp_endpoint: str | None = None,
    capacity: int = 10_000,
) -> SpanCollector:
    """Turn telemetry on (spans and metrics in every runtime of this process); return the collector.

    Args:
        service_name: ``service.name`` of the resource (default ``OTEL_SERVICE_NAME``, else ``loom``).
        console: print finished spans (default: ``console`` in ``OTEL_TRACES_EXPORTER``).
        otlp_endpoint: export spans and metrics over OTLP there (default: when an
            ``OTEL_EXPORTER_OTLP_*ENDPOINT`` variable is set); needs the ``otlp`` extra.
        capacity: spans the in-memory collector keeps (first call only).

    Raises:
        UsageError: OTLP asked for but ``opentelemetry-exporter-otlp`` is not installed.
    """
    global _state
    with _lock:
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            global _disabled_collector
            if _state is not None:
                return _state.collector
            if _disabled_collector is None:  # the same (empty) collector every time: idempotent
                _disabled_collector = SpanCollector(capacity)
                seam._collector = _disabled_collector
            return _disabled_collector
        if _state is None:
            _state = _build(service_name, capacity, otlp_endpoint)
            seam._collector = _state.collector
        traces = _env_list("OTEL_TRACES_EXPORTER", "otlp" if (otlp_endpoint or _otlp_endpoint_set()) else "none")
        if (console if console is not None else "console" in traces) and "console" not in _state.exporters:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

            _state.provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            _state.exporters.add("console")
        if (otlp_endpoint or ("otlp" in traces and _otlp_endpoint_set())) and "otlp" not in _state.exporters:
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            _state.provider.add_span_processor(BatchSpanProcessor(_otlp_span_exporter(otlp_endpoint)))
            _state.exporters.add("otlp")
        seam.set_tracer(_state.tracer)
        return _state.collector


def _build(service_name: str | None, capacity: int, otlp_endpoint: str | None) -> _State:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from loom._version import __version__
    from loom.telemetry.metrics import Meters
    from loom.telemetry.tracing import OtelTracer

    attrs: dict[str, Any] = {
        "service.version": __version__,
        "service.instance.id": f"{os.uname().nodename}-{os.getpid()}",
    }
    if service_name or not os.environ.get("OTEL_SERVICE_NAME"):
        attrs["service.name"] = service_name or "loom"
    resource = Resource.create(attrs)
    collector = SpanCollector(capacity)

    provider = trace.get_tracer_provider()
    if not hasattr(provider, "add_span_processor"):  # nobody configured one: ours becomes the global one
        provider = TracerProvider(resource=resource)
        trace.set_tracer_provider(provider)
    provider.add_span_processor(collector)

    reader = InMemoryMetricReader()  # pull-based: costs nothing until read (metrics_snapshot)
    readers: list[Any] = [reader]
    exporters = _env_list("OTEL_METRICS_EXPORTER", "otlp" if (otlp_endpoint or _otlp_endpoint_set()) else "none")
    if otlp_endpoint or ("otlp" in exporters and _otlp_endpoint_set()):
        readers.append(PeriodicExportingMetricReader(_otlp_metric_exporter(otlp_endpoint)))
    if "console" in exporters:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if metrics.get_meter_provider().__class__.__name__.startswith("_Proxy"):
        metrics.set_meter_provider(meter_provider)
    tracer = OtelTracer(provider, Meters(meter_provider))
    return _State(provider, meter_provider, reader, tracer, collector)


def _otlp_module(signal: str) -> Any:
    protocol = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    kind = "http" if protocol.strip().lower().startswith("http") else "grpc"
    name = f"opentelemetry.exporter.otlp.proto.{kind}.{'trace' if signal == 'traces' else 'metric'}_exporter"
    try:
        import importlib

        return importlib.import_module(name)
    except ImportError as exc:
        raise UsageError(
            f"OTLP export needs the 'otlp' extra (pip install 'loom-notebook[otlp]'): cannot import {name} ({exc})"
        ) from None


def _otlp_span_exporter(endpoint: str | None) -> Any:
    mod = _otlp_module("traces")
    return mod.OTLPSpanExporter(endpoint=endpoint) if endpoint else mod.OTLPSpanExporter()


def _otlp_metric_exporter(endpoint: str | None) -> Any:
    mod = _otlp_module("metrics")
    return mod.OTLPMetricExporter(endpoint=endpoint) if endpoint else mod.OTLPMetricExporter()


def disable_telemetry() -> None:
    """Stop making spans and metrics in every runtime (``%loom trace off``); exporters flush what
    they hold in the background (never blocking the caller: a notebook's loop). ``init_telemetry()``
    turns it on again with the same collector."""
    seam.set_tracer(None)
    global _flushing
    state = _state
    if state is None or (_flushing is not None and _flushing.is_alive()):
        return
    # flushed off the caller's thread (a notebook's loop): an unreachable collector retries for seconds

    def flush() -> None:
        state.provider.force_flush(2000)
        state.meter_provider.force_flush(2000)

    _flushing = threading.Thread(target=flush, name="loom-telemetry-flush", daemon=True)
    _flushing.start()


def metrics_snapshot() -> dict[str, list[dict[str, Any]]]:
    """Loom's metrics as collected now: ``{name: [{"attributes": {...}, "value": ...}, ...]}``
    (histograms: ``count``, ``sum``, ``min``, ``max``, ``bucket_counts``, ``explicit_bounds``).
    Empty before :func:`init_telemetry`."""
    state = _state
    if state is None:
        return {}
    data = state.metric_reader.get_metrics_data()
    out: dict[str, list[dict[str, Any]]] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name != "loom":
                continue
            for metric in sm.metrics:
                rows = out.setdefault(metric.name, [])
                for p in metric.data.data_points:
                    row: dict[str, Any] = {"attributes": dict(p.attributes or {})}
                    if hasattr(p, "bucket_counts"):
                        row.update(
                            count=p.count,
                            sum=p.sum,
                            min=p.min,
                            max=p.max,
                            bucket_counts=list(p.bucket_counts),
                            explicit_bounds=list(p.explicit_bounds),
                        )
                    else:
                        row["value"] = p.value
                    rows.append(row)
    return out
