"""RouterInspector: the model router's recent decisions and why, read from ``router.decisions``."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import traitlets

from loom.events.qos import Overflow, QoS
from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html

__all__ = ["RouterInspector"]


def _row(d: dict[str, Any]) -> dict[str, Any]:
    outcome = d.get("outcome") or {}
    return {
        "route": str(d.get("route", "?")),
        "provider": d.get("provider") or "-",
        "answered_by": outcome.get("answered_by") or outcome.get("provider") or "-",
        "reason": str(d.get("reason", "")),
        "confidence": d.get("confidence"),
        "est_latency_ms": d.get("est_latency_ms"),
        "latency_source": d.get("latency_source", ""),
        "est_cost": d.get("est_cost"),
        "privacy": (d.get("request") or {}).get("privacy", ""),
        "latency_ms": outcome.get("latency_ms"),
        "failovers": outcome.get("failovers") or [],
        "error": outcome.get("error") or "",
        "considered": d.get("considered") or [],
    }


class RouterInspector(Inspector):
    """The last ``max_rows`` routing decisions: route, provider, who answered, the reason, estimates.

    It reads the ``router.decisions`` events of the bus (any router that publishes there shows up);
    clicking a row shows every provider the router considered and why each was or was not eligible.
    """

    _esm = asset("router_inspector.js")
    rows = traitlets.List().tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)

    def __init__(self, rt: Any = None, *, max_rows: int = 30, **kw: Any) -> None:
        self.max_rows = max_rows
        super().__init__(rt, title="model router", **kw)

    def _setup(self) -> None:
        self._sub = self.rt.bus.subscribe(
            "router.decisions", qos=QoS.REALTIME, maxsize=1024, overflow=Overflow.DROP_OLDEST, name="router-inspector"
        )
        self._rows: deque[dict[str, Any]] = deque(maxlen=self.max_rows)
        self._seen = 0

    def _teardown(self) -> None:
        self._sub.close()

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        got = False
        while self._sub.qsize():
            _, event = self._sub.get_nowait()
            try:
                decision = json.loads(event.payload)
            except ValueError:
                continue
            if isinstance(decision, dict):
                self._rows.appendleft(_row(decision))
                self._seen += 1
                got = True
        if not got and not force:
            return None
        return {"rows": list(self._rows), "total": self._seen}

    def _static_html(self) -> str:
        rows = [
            [r["route"], r["provider"], r["answered_by"], r["reason"], r["est_latency_ms"], r["latency_source"]]
            for r in self.rows
        ]
        head = ["route", "provider", "answered by", "reason", "est. ms", "estimate"]
        return table_html("model router", head, rows, f"{self.total} decisions")
