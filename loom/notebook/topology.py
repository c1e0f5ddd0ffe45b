"""Topology: agents ↔ topics as a graph (networkx layout), edges weighted by traffic.

Edges: topic pattern → agent for every subscription (from the directory, so the graph is
complete before any traffic), weighted by the events that reached the agent through it; and
agent → topic for what an agent published. Private reply topics are left out. ``figure()``
draws the same graph with matplotlib for exports.
"""

from __future__ import annotations

from typing import Any

import traitlets

from loom.events.qos import Overflow, QoS
from loom.events.topics import topic_matches
from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html

__all__ = ["Topology"]


class Topology(Inspector):
    """Live graph of who talks on which topic."""

    _esm = asset("topology.js")
    nodes = traitlets.List().tag(sync=True)
    edges = traitlets.List().tag(sync=True)

    def __init__(self, rt: Any = None, *, interval: float = 0.5, **kw: Any) -> None:
        super().__init__(rt, title="Loom topology", interval=interval, **kw)

    def _setup(self) -> None:
        self._sub = self.rt.bus.subscribe(
            ">", qos=QoS.REALTIME, maxsize=8192, overflow=Overflow.DROP_OLDEST, name="topology"
        )
        self._weights: dict[tuple[str, str], int] = {}
        self._layout: dict[str, tuple[float, float]] = {}
        self._layout_key: frozenset[str] = frozenset()

    def _teardown(self) -> None:
        self._sub.close()

    def graph(self) -> Any:
        """The current graph as a ``networkx.DiGraph`` (nodes carry ``kind``; edges ``weight``)."""
        import networkx as nx

        g = nx.DiGraph()
        for agent in self.rt.agents:
            g.add_node(f"agent:{agent.id}", kind="agent", label=agent.id, status=agent.status)
            for pattern in agent.topics:
                if pattern != f"agent.{agent.id}.replies":
                    g.add_node(f"topic:{pattern}", kind="topic", label=pattern, status="")
                    g.add_edge(f"topic:{pattern}", f"agent:{agent.id}", weight=0)
        for (src, dst), w in self._weights.items():
            for node in (src, dst):
                if node not in g:
                    g.add_node(node, kind=node.split(":", 1)[0], label=node.split(":", 1)[1], status="")
            g.add_edge(src, dst, weight=w)
        return g

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        changed = force
        agents = self.rt.agents
        while self._sub.qsize():
            topic, event = self._sub.get_nowait()
            if topic.startswith("system."):
                continue
            sender = event.metadata.get("sender", "")
            if sender.startswith("agent."):
                key = (f"agent:{sender[6:]}", f"topic:{topic}")
                self._weights[key] = self._weights.get(key, 0) + 1
            for info in self.rt.directory.by_topic(topic):
                agent = agents.get(info.agent_id)
                via = next((p for p in info.topics if topic_matches(p, topic)), topic)
                if agent is not None and via != f"agent.{info.agent_id}.replies":
                    key = (f"topic:{via}", f"agent:{info.agent_id}")
                    self._weights[key] = self._weights.get(key, 0) + 1
            changed = True
        g = self.graph()
        key = frozenset(g.nodes) | frozenset(f"{a}->{b}" for a, b in g.edges)
        if key != self._layout_key:
            import networkx as nx

            pos = nx.spring_layout(g, seed=7, k=1.2) if len(g) else {}
            self._layout = {n: (float(x), float(y)) for n, (x, y) in pos.items()}
            self._layout_key = key
            changed = True
        if not changed:
            return None
        nodes = [
            {
                "id": n,
                "kind": d["kind"],
                "label": d["label"],
                "status": d["status"],
                "x": self._layout.get(n, (0, 0))[0],
                "y": self._layout.get(n, (0, 0))[1],
            }
            for n, d in g.nodes(data=True)
        ]
        edges = [{"source": s, "target": t, "weight": d["weight"]} for s, t, d in g.edges(data=True)]
        return {"nodes": nodes, "edges": edges}

    def figure(self, ax: Any = None) -> Any:
        """A matplotlib rendering of the current graph (for exports and static reports)."""
        import matplotlib.pyplot as plt
        import networkx as nx

        self.flush(force=True)
        g = self.graph()
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 5))
        else:
            fig = ax.figure
        pos = {n: self._layout.get(n, (0.0, 0.0)) for n in g.nodes}
        colors = ["#1a4d8f" if d["kind"] == "agent" else "#d97706" for _, d in g.nodes(data=True)]
        widths = [0.5 + min(d["weight"], 50) / 10 for _, _, d in g.edges(data=True)]  # 0.5 = subscribed, idle
        nx.draw_networkx(
            g,
            pos,
            ax=ax,
            node_color=colors,
            width=widths,
            font_size=8,
            node_size=500,
            labels={n: d["label"] for n, d in g.nodes(data=True)},
            arrows=True,
        )
        ax.set_title("agents (blue) and topics (orange); edge width = events")
        ax.set_axis_off()
        return fig

    def _static_html(self) -> str:
        rows = [[e["source"], e["target"], e["weight"]] for e in sorted(self.edges, key=lambda e: -e["weight"])[:30]]
        return table_html("Loom topology", ["from", "to", "events"], rows, f"{len(self.nodes)} nodes")
