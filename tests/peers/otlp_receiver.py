"""A local OTLP/gRPC receiver for the tests: what an OpenTelemetry exporter sends, kept in memory.

    receiver = OtlpReceiver().start()      # a real gRPC server on 127.0.0.1, a free port
    ... a process exports to receiver.endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) ...
    receiver.spans(), receiver.metrics()
    receiver.stop()

It implements the collector's TraceService and MetricsService (opentelemetry-proto), answers every
export with success, and flattens what arrives: spans as dicts (hex ids, the resource's
``service.name``), metric data points per metric name. Its server runs on threads of its own, so
an asyncio test awaiting something else keeps receiving.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from loom.bridge._grpc import grpc

__all__ = ["OtlpReceiver"]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, owner: OtlpReceiver) -> None:
        self.owner = owner

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method's name
        rows = []
        for rs in request.resource_spans:
            service = _attrs(rs.resource.attributes).get("service.name", "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    rows.append(
                        {
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex() or None,
                            "name": s.name,
                            "service": service,
                            "attributes": _attrs(s.attributes),
                        }
                    )
        with self.owner._lock:
            self.owner._spans.extend(rows)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, owner: OtlpReceiver) -> None:
        self.owner = owner

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
        rows: list[tuple[str, dict[str, Any]]] = []
        for rm in request.resource_metrics:
            service = _attrs(rm.resource.attributes).get("service.name", "")
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    data = getattr(m, m.WhichOneof("data"))
                    for p in data.data_points:
                        row = {"service": service, "attributes": _attrs(p.attributes)}
                        if hasattr(p, "bucket_counts"):  # a histogram: its count and sum
                            row.update(count=p.count, sum=p.sum)
                        else:
                            row["value"] = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                        rows.append((m.name, row))
        with self.owner._lock:
            for name, row in rows:
                self.owner._metrics.setdefault(name, []).append(row)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    """An OTLP/gRPC endpoint on 127.0.0.1 (port 0: a free one) that keeps what it is sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[dict[str, Any]] = []
        self._metrics: dict[str, list[dict[str, Any]]] = {}
        self._server: Any = None
        self._pool: futures.ThreadPoolExecutor | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-receiver")
        server = grpc.server(self._pool)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(0).wait(5)
            assert self._pool is not None
            self._pool.shutdown(wait=True)  # no thread of ours outlives the test

    def spans(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._spans)

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        """Every data point received, per metric name, in arrival order (cumulative sums repeat)."""
        with self._lock:
            return {k: list(v) for k, v in self._metrics.items()}
