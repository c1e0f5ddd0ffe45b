"""Meters: Loom's OpenTelemetry metrics.

Counters the parts keep anyway (bus topics, mailboxes, tools, bridge) are read at collection
time through :meth:`Instruments.observe` sources: nothing is counted twice on the hot path.
Durations and token counts come from spans as they end (tool calls, LLM calls) and the bus's
sampled queueing latency (one delivery in 64) from :meth:`Instruments.record`.

Names and attributes (docs/observability.md has the table):

=================================  =========  ===========================================
``loom.bus.published``             counter    ``loom.topic``
``loom.bus.delivered``             counter    ``loom.topic``
``loom.bus.dropped``               counter    ``loom.topic``, ``loom.reason``
``loom.bus.delivery_latency``      histogram  ms from queueing to the reader, ``loom.qos``
``loom.agent.mailbox_depth``       gauge      ``loom.agent``
``loom.agent.handled``             counter    ``loom.agent``, ``loom.status`` (ok/error/expired)
``loom.tool.calls``                counter    ``loom.tool``, ``loom.status`` (ok or the error code)
``loom.tool.duration``             histogram  ms, ``loom.tool``, ``loom.status``
``loom.llm.latency``               histogram  ms, ``loom.llm.provider``, ``gen_ai.request.model``
``loom.llm.tokens``                counter    ``loom.llm.provider``, ``gen_ai.token.type`` (input/output)
``loom.bridge.connections``        gauge      (open agent streams)
``loom.bridge.bytes``              counter    ``loom.direction`` (in/out)
``loom.cluster.messages``          counter    ``loom.cluster.count`` (what the NATS link counted)
=================================  =========  ===========================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from loom.telemetry.seam import live_instruments, retired

__all__ = ["OBSERVED", "Meters"]

# name -> (kind, unit, description) of the metrics read from the parts' own counters
OBSERVED: dict[str, tuple[str, str, str]] = {
    "loom.bus.published": ("counter", "{event}", "events published, per topic"),
    "loom.bus.delivered": ("counter", "{event}", "deliveries made, per topic"),
    "loom.bus.dropped": ("counter", "{event}", "deliveries dropped, per topic and reason"),
    "loom.agent.mailbox_depth": ("gauge", "{event}", "events waiting in an agent's mailbox"),
    "loom.agent.handled": ("counter", "{event}", "events an agent handled, per outcome"),
    "loom.tool.calls": ("counter", "{call}", "tool calls, per tool and outcome"),
    "loom.bridge.connections": ("gauge", "{stream}", "agent streams open on the bridge"),
    "loom.bridge.bytes": ("counter", "By", "bytes through the bridge, per direction"),
    "loom.cluster.messages": ("counter", "{message}", "the NATS cluster link's counts, per kind"),
}


class Meters:
    """The instruments on ``meter_provider``'s ``loom`` meter."""

    def __init__(self, meter_provider: Any) -> None:
        from loom._version import __version__

        meter = meter_provider.get_meter("loom", __version__)
        self._meter = meter
        for name, (kind, unit, desc) in OBSERVED.items():
            make = meter.create_observable_gauge if kind == "gauge" else meter.create_observable_counter
            make(name, callbacks=[_reader(name)], unit=unit, description=desc)
        self._histograms = {
            "loom.bus.delivery_latency": meter.create_histogram(
                "loom.bus.delivery_latency", unit="ms", description="time from queueing to the reader (sampled)"
            ),
            "loom.tool.duration": meter.create_histogram("loom.tool.duration", unit="ms", description="tool call time"),
            "loom.llm.latency": meter.create_histogram("loom.llm.latency", unit="ms", description="LLM call time"),
        }
        self._tokens = meter.create_counter("loom.llm.tokens", unit="{token}", description="LLM tokens per provider")

    def record(self, name: str, value: float, attrs: Mapping[str, str]) -> None:
        hist = self._histograms.get(name)
        if hist is not None:
            hist.record(value, attrs)

    def span_hooks(self) -> dict[str, Callable[[Mapping[str, Any], float, BaseException | None], None]]:
        """What is recorded when a span of that name ends: ``hook(attributes, ms, exception)``
        (the attributes as set, whether or not the span was sampled)."""
        return {"tool.invoke": self._tool_ended, "llm.generate": self._llm_ended}

    def _tool_ended(self, attrs: Mapping[str, Any], ms: float, exc: BaseException | None) -> None:
        self._histograms["loom.tool.duration"].record(
            ms, {"loom.tool": str(attrs.get("loom.tool", "")), "loom.status": str(attrs.get("loom.status", "error"))}
        )

    def _llm_ended(self, attrs: Mapping[str, Any], ms: float, exc: BaseException | None) -> None:
        provider = str(attrs.get("loom.llm.provider", ""))
        model = str(attrs.get("gen_ai.request.model", ""))
        self._histograms["loom.llm.latency"].record(
            ms, {"loom.llm.provider": provider, "gen_ai.request.model": model, "loom.status": "error" if exc else "ok"}
        )
        for kind, key in (("input", "gen_ai.usage.input_tokens"), ("output", "gen_ai.usage.output_tokens")):
            n = attrs.get(key)
            if isinstance(n, int) and n > 0:
                self._tokens.add(
                    n, {"loom.llm.provider": provider, "gen_ai.request.model": model, "gen_ai.token.type": kind}
                )


def _reader(name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def read(options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[tuple[str, str], ...], float] = {}
        # every runtime of this process, summed per attribute set, plus what closed parts counted
        live = [obs for inst in live_instruments() for obs in inst.observations(name)]
        for value, attrs in live + retired(name):
            key = tuple(sorted(attrs.items()))
            totals[key] = totals.get(key, 0) + value
        return [Observation(v, dict(k)) for k, v in totals.items()]

    return read
