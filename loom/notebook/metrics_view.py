"""MetricsView: the runtime's metrics live: event rates, drops, delivery latency, mailboxes, tools, LLM.

    loom.MetricsView(rt)

It reads the same sources the OpenTelemetry metrics read (``rt.instruments.observations(name)``:
the bus's per-topic counters, the agents' mailboxes and handled counts, the tool registry's calls),
so it works with telemetry on or off; rates are the counters differenced between ticks (one a
second by default). Delivery latency is the bus subscriptions' own sampled latency (one delivery
in 64). LLM tokens and latency come from the OpenTelemetry meters (they exist only while telemetry
is on). The front end draws a sparkline for each series; ``figure()`` draws them with matplotlib.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import traitlets

from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html
from loom.telemetry.seam import current_collector

__all__ = ["MetricsView"]

SERIES = ("published", "delivered", "dropped", "handled", "tool_calls", "mailbox")
_LABELS = {
    "published": "published/s",
    "delivered": "delivered/s",
    "dropped": "dropped/s",
    "handled": "handled/s",
    "tool_calls": "tool calls/s",
    "mailbox": "mailbox depth",
}


# the subscriptions of inspectors (their ``name``): polled every tick, so their latency is the tick
_OBSERVERS = frozenset(
    ("topology", "sequence", "bus-inspector", "replay-panel", "router-inspector", "voice-panel", "metrics", "timeline")
)


class MetricsView(Inspector):
    """Small live charts of a runtime's metrics over the last ``history`` ticks.

    Args:
        rt: the runtime (default ``loom.current()``).
        interval: seconds between samples (and updates), default 1.
        history: samples kept per series (the sparklines' length).
    """

    _esm = asset("metrics_view.js")
    series = traitlets.Dict().tag(sync=True)  # name -> [value per tick], oldest first
    current = traitlets.Dict().tag(sync=True)  # name -> the latest value; totals
    drops = traitlets.List().tag(sync=True)
    latency = traitlets.List().tag(sync=True)
    mailboxes = traitlets.List().tag(sync=True)
    tools = traitlets.List().tag(sync=True)
    llm = traitlets.List().tag(sync=True)
    labels = traitlets.Dict(_LABELS).tag(sync=True)

    def __init__(self, rt: Any = None, *, interval: float = 1.0, history: int = 60, **kw: Any) -> None:
        self.history = history
        super().__init__(rt, title="Loom metrics", interval=interval, **kw)

    def _setup(self) -> None:
        self._hist: dict[str, deque[float]] = {k: deque(maxlen=self.history) for k in SERIES}
        self._prev: dict[str, float] | None = None
        self._prev_t = time.monotonic()
        self._prev_tools: dict[str, float] = {}

    # -- reading the sources ---------------------------------------------------------------
    def _obs(self, name: str) -> list[tuple[float, Any]]:
        return self.rt.instruments.observations(name)

    def totals(self) -> dict[str, float]:
        """The counters now, summed over topics, agents and tools."""
        handled = self._obs("loom.agent.handled")
        return {
            "published": sum(v for v, _ in self._obs("loom.bus.published")),
            "delivered": sum(v for v, _ in self._obs("loom.bus.delivered")),
            "dropped": sum(v for v, _ in self._obs("loom.bus.dropped")),
            "handled": sum(v for v, _ in handled),
            "tool_calls": sum(v for v, _ in self._obs("loom.tool.calls")),
            "mailbox": sum(v for v, _ in self._obs("loom.agent.mailbox_depth")),
        }

    def _drops(self) -> list[dict[str, Any]]:
        by: dict[tuple[str, str], float] = {}
        for v, a in self._obs("loom.bus.dropped"):
            key = (str(a.get("loom.reason", "?")), str(a.get("loom.topic", "")))
            by[key] = by.get(key, 0) + v
        reasons: dict[str, dict[str, Any]] = {}
        for (reason, topic), n in sorted(by.items(), key=lambda kv: -kv[1]):
            r = reasons.setdefault(reason, {"reason": reason, "count": 0, "topics": []})
            r["count"] += int(n)
            if len(r["topics"]) < 5:
                r["topics"].append(f"{topic}: {int(n)}")
        return sorted(reasons.values(), key=lambda r: -r["count"])

    def _latency(self) -> list[dict[str, Any]]:
        rows = []
        for sub in self.rt.bus.subscriptions():
            st = sub.stats
            if st.latency_samples:
                rows.append(
                    {
                        "observer": st.id.split("-", 2)[-1] in _OBSERVERS,
                        "subscription": st.id,
                        "patterns": ", ".join(st.patterns),
                        "qos": st.qos.name,
                        "p50_us": round(st.latency_p50_us or 0.0, 1),
                        "p99_us": round(st.latency_p99_us or 0.0, 1),
                        "samples": st.latency_samples,
                    }
                )
        return sorted(rows, key=lambda r: -r["p99_us"])[:10]

    def _mailboxes(self) -> list[dict[str, Any]]:
        handled: dict[tuple[str, str], float] = {}
        for v, a in self._obs("loom.agent.handled"):
            handled[(str(a.get("loom.agent")), str(a.get("loom.status")))] = v
        return [
            {
                "agent": str(a.get("loom.agent")),
                "depth": int(v),
                "handled": int(handled.get((str(a.get("loom.agent")), "ok"), 0)),
                "errors": int(handled.get((str(a.get("loom.agent")), "error"), 0)),
            }
            for v, a in self._obs("loom.agent.mailbox_depth")
        ]

    def _tools(self, dt: float) -> list[dict[str, Any]]:
        per: dict[str, dict[str, Any]] = {}
        for v, a in self._obs("loom.tool.calls"):
            t = per.setdefault(str(a.get("loom.tool", "?")), {"tool": str(a.get("loom.tool", "?")), "calls": 0})
            t.setdefault("errors", 0)
            t["calls"] += int(v)
            if a.get("loom.status") != "ok":
                t["errors"] += int(v)
                codes = t.setdefault("codes", {})
                codes[str(a.get("loom.status"))] = int(v)
        for name, t in per.items():
            t["rate"] = round(max(0.0, t["calls"] - self._prev_tools.get(name, 0)) / dt, 2) if dt else 0.0
        self._prev_tools = {name: t["calls"] for name, t in per.items()}
        return sorted(per.values(), key=lambda t: -t["calls"])

    @staticmethod
    def _llm() -> list[dict[str, Any]]:
        """Tokens and call latency per provider and model, from the OpenTelemetry meters (when on)."""
        if current_collector() is None:  # telemetry never initialised: no meters (and no OpenTelemetry import)
            return []
        from loom.telemetry.otel import metrics_snapshot

        snap = metrics_snapshot()
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for p in snap.get("loom.llm.tokens", []):
            a = p["attributes"]
            key = (str(a.get("loom.llm.provider", "")), str(a.get("gen_ai.request.model", "")))
            row = rows.setdefault(key, {"provider": key[0], "model": key[1], "input": 0, "output": 0, "calls": 0})
            kind = "output" if a.get("gen_ai.token.type") == "output" else "input"
            row[kind] += int(p["value"])
        for p in snap.get("loom.llm.latency", []):
            a = p["attributes"]
            key = (str(a.get("loom.llm.provider", "")), str(a.get("gen_ai.request.model", "")))
            row = rows.setdefault(key, {"provider": key[0], "model": key[1], "input": 0, "output": 0, "calls": 0})
            row["calls"] += int(p["count"])
            row["latency_ms_sum"] = row.get("latency_ms_sum", 0.0) + float(p["sum"])
        for row in rows.values():
            row["mean_ms"] = round(row.pop("latency_ms_sum", 0.0) / row["calls"], 1) if row["calls"] else None
        return sorted(rows.values(), key=lambda r: (r["provider"], r["model"]))

    # -- sampling --------------------------------------------------------------------------
    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        now = time.monotonic()
        dt = now - self._prev_t
        totals = self.totals()
        if self._prev is not None and dt > 0:
            for k in SERIES:  # counters become rates; the mailbox depth is a gauge, kept as is
                value = totals[k] if k == "mailbox" else max(0.0, totals[k] - self._prev[k]) / dt
                self._hist[k].append(round(value, 2))
        tools = self._tools(dt if self._prev is not None else 0.0)
        self._prev, self._prev_t = totals, now
        current = {k: (self._hist[k][-1] if self._hist[k] else 0.0) for k in SERIES}
        current.update({f"{k}_total": int(v) for k, v in totals.items() if k != "mailbox"})
        lat = self._latency()
        # the headline leaves out the inspectors' own subscriptions: polled, they wait a tick by design
        work = [r for r in lat if not r["observer"]]
        if work:
            current["latency_p50_us"] = sorted(r["p50_us"] for r in work)[len(work) // 2]
            current["latency_p99_us"] = work[0]["p99_us"]
        return {
            "series": {k: list(v) for k, v in self._hist.items()},
            "current": current,
            "drops": self._drops(),
            "latency": lat,
            "mailboxes": self._mailboxes(),
            "tools": tools,
            "llm": self._llm(),
        }

    def rate(self, name: str) -> float:
        """The latest rate of a series (``published``, ``delivered``, ...), per second."""
        h = self._hist[name]
        return h[-1] if h else 0.0

    # -- static views ----------------------------------------------------------------------
    def figure(self) -> Any:
        """The series and the per-tool calls as matplotlib charts (for exports and reports)."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(12, 3))
        n = len(self.series.get("published", []))
        x = [-(n - 1 - i) * self.interval for i in range(n)]
        for k in ("published", "delivered", "dropped", "handled"):
            axes[0].plot(x, self.series.get(k, []), label=_LABELS[k])
        axes[0].set_title("events/s")
        axes[0].set_xlabel("s (now = 0)")
        axes[0].legend(fontsize=7)
        axes[1].plot(x, self.series.get("mailbox", []), color="#b45309")
        axes[1].set_title("mailbox depth (all agents)")
        names = [t["tool"] for t in self.tools] or ["(none)"]
        ok = [t["calls"] - t["errors"] for t in self.tools] or [0]
        axes[2].barh(names, ok, color="#15803d", label="ok")
        axes[2].barh(names, [t["errors"] for t in self.tools] or [0], left=ok, color="#b91c1c", label="errors")
        axes[2].set_title("tool calls")
        axes[2].legend(fontsize=7)
        fig.tight_layout()
        return fig

    def _static_html(self) -> str:
        c = self.current
        rows = [[_LABELS[k], c.get(k, 0), c.get(f"{k}_total", "")] for k in SERIES]
        if "latency_p50_us" in c:
            rows.append(["delivery latency p50 / p99 µs", c["latency_p50_us"], c["latency_p99_us"]])
        rows += [[f"drops: {d['reason']}", "", d["count"]] for d in self.drops]
        rows += [
            [f"tool {t['tool']}", f"{t['rate']}/s", f"{t['calls']} calls, {t['errors']} errors"] for t in self.tools
        ]
        for r in self.llm:
            rows.append(
                [f"llm {r['provider']} {r['model']}", f"{r['calls']} calls", f"{r['input']}/{r['output']} tokens"]
            )
        return table_html("Loom metrics", ["metric", "now", "total"], rows, f"every {self.interval:g} s")
