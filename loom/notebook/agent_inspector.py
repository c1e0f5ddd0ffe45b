"""AgentInspector: every agent's status, mailbox, subscriptions, counters and persistent state."""

from __future__ import annotations

from typing import Any

import traitlets

from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html

__all__ = ["AgentInspector"]


class AgentInspector(Inspector):
    """Live table of ``rt.agents`` (created/running/stopped/failed), with each agent's state as a tree."""

    _esm = asset("agent_inspector.js")
    agents = traitlets.List().tag(sync=True)

    def __init__(self, rt: Any = None, **kw: Any) -> None:
        super().__init__(rt, title="Loom agents", **kw)

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        snaps = [agent.snapshot() for agent in self.rt.agents]
        if not force and snaps == self.agents:
            return None
        return {"agents": snaps}

    def _static_html(self) -> str:
        rows = [
            [
                a["agent_id"],
                a["status"],
                f"{a['mailbox_depth']}/{a['mailbox_size']}",
                ", ".join(a["topics"]),
                a["handled"],
                a["failed"],
                a["last_error"],
            ]
            for a in self.agents
        ]
        head = ["agent", "status", "mailbox", "subscriptions", "handled", "failed", "last error"]
        return table_html("Loom agents", head, rows, f"{len(rows)} agents")
