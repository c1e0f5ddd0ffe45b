"""Topology: agents and topics as a two-column graph, edge width by the recent event rate.

Edges: **subscribe** (topic pattern → agent) for every subscription in the directory, so the graph
is complete before any traffic; **publish** (agent → topic) for what an agent sent (the ``sender``
of events seen), to the subscription patterns its event matched (so the flow reads agent → pattern
→ agent), or to the topic itself when nobody subscribes. Thread reply topics fold into
``thread.*.reply``; agents' reply inboxes appear once they carry traffic; ``system.>`` is left out.

An edge's width is its rate over the last ``window_s`` seconds (not all-time counts: a burst an
hour ago does not look busy now). Agents sit in the left column and topics in the right one, each
column ordered by the barycentric heuristic to reduce edge crossings (:func:`order_columns`,
:func:`crossings`). Nodes carry live counts. Clicking a topic filters a linked BusInspector
(``Topology(rt, bus_inspector=bi)``); ``figure()`` draws the same graph with matplotlib.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import traitlets

from loom.events.qos import Overflow, QoS
from loom.events.topics import topic_matches
from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html

__all__ = ["Topology", "crossings", "order_columns"]

_THREAD = re.compile(r"^thread\.[^.]+\.(reply|broadcast)$")

Pair = tuple[str, str]  # (agent node, topic node), whichever way the edge points


def crossings(left: Sequence[str], right: Sequence[str], pairs: Iterable[Pair]) -> int:
    """How many straight edges between two columns cross, for these orders (``pairs``: left, right)."""
    lp = {n: i for i, n in enumerate(left)}
    rp = {n: i for i, n in enumerate(right)}
    seg = sorted({(lp[a], rp[b]) for a, b in pairs if a in lp and b in rp})
    return sum(1 for i, (a1, b1) in enumerate(seg) for a2, b2 in seg[i + 1 :] if (a1 - a2) * (b1 - b2) < 0)


def order_columns(
    left: Sequence[str], right: Sequence[str], pairs: Iterable[Pair], sweeps: int = 8
) -> tuple[list[str], list[str]]:
    """Orders of the two columns with few crossings: the barycentric heuristic (each node placed at
    the mean position of its neighbours in the other column), alternating sides, keeping the best;
    then, since barycentres tie easily, neighbours are swapped where that (with the other column
    re-sorted) removes crossings."""
    pairs = sorted(set(pairs))
    nbrs: dict[str, list[str]] = {}
    for a, b in pairs:
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    best = (list(left), list(right))
    best_x = crossings(*best, pairs)
    cur_l, cur_r = list(left), list(right)
    for sweep in range(sweeps):
        if best_x == 0:
            break
        if sweep % 2 == 0:
            cur_r = _by_barycentre(cur_r, cur_l, nbrs)
        else:
            cur_l = _by_barycentre(cur_l, cur_r, nbrs)
        x = crossings(cur_l, cur_r, pairs)
        if x < best_x:
            best, best_x = (list(cur_l), list(cur_r)), x
    if best_x > 0 and len(pairs) <= 80:  # each try costs a crossing count: small graphs only
        best = _exchange(*best, pairs, best_x, nbrs)
    return best


def _by_barycentre(moving: list[str], fixed: list[str], nbrs: dict[str, list[str]]) -> list[str]:
    pos = {n: i for i, n in enumerate(fixed)}
    here = {n: i for i, n in enumerate(moving)}

    def key(n: str) -> tuple[float, int]:
        ps = [pos[m] for m in nbrs.get(n, ()) if m in pos]
        return (sum(ps) / len(ps) if ps else float(here[n]), here[n])

    return sorted(moving, key=key)


def _exchange(
    left: list[str], right: list[str], pairs: list[Pair], x: int, nbrs: dict[str, list[str]]
) -> tuple[list[str], list[str]]:
    """Swap neighbours in one column, re-sort the other by barycentre; keep what removes crossings."""
    for _ in range(8):
        improved = False
        for side in (0, 1):
            col = left if side == 0 else right
            for i in range(len(col) - 1):
                tried = [*col[:i], col[i + 1], col[i], *col[i + 2 :]]
                if side == 0:
                    cand = (tried, _by_barycentre(right, tried, nbrs))
                else:
                    cand = (_by_barycentre(left, tried, nbrs), tried)
                y = crossings(*cand, pairs)
                if y < x:
                    (left, right), x, improved = cand, y, True
                    col = left if side == 0 else right
        if not improved or x == 0:
            break
    return left, right


class Topology(Inspector):
    """Live graph of who publishes and who subscribes on which topic.

    Args:
        rt: the runtime (default ``loom.current()``).
        window_s: the sliding window of the edge rates (events per second).
        bus_inspector: a :class:`~loom.notebook.BusInspector` that clicking a topic filters.
    """

    _esm = asset("topology.js")
    nodes = traitlets.List().tag(sync=True)
    edges = traitlets.List().tag(sync=True)
    window_s = traitlets.Float(10.0).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)  # the clicked node's id
    linked = traitlets.Bool(False).tag(sync=True)

    def __init__(
        self, rt: Any = None, *, window_s: float = 10.0, bus_inspector: Any = None, interval: float = 0.5, **kw: Any
    ) -> None:
        self.bus_inspector = bus_inspector
        super().__init__(
            rt, title="Loom topology", interval=interval, window_s=window_s, linked=bus_inspector is not None, **kw
        )
        self.observe(self._on_select, names=["selected"])

    def _setup(self) -> None:
        self._sub = self.rt.bus.subscribe(
            ">", qos=QoS.REALTIME, maxsize=8192, overflow=Overflow.DROP_OLDEST, name="topology"
        )
        self._totals: dict[tuple[str, str], int] = {}  # edge -> events since the widget opened
        self._window: deque[tuple[float, dict[tuple[str, str], int]]] = deque()  # (tick time, counts)
        self._in_window: dict[tuple[str, str], int] = {}
        self._started = time.monotonic()
        self._layout: dict[str, tuple[float, float]] = {}
        self._layout_key: frozenset[str] = frozenset()
        self._last: tuple[Any, ...] = ()

    def _teardown(self) -> None:
        self._sub.close()

    # -- counting ------------------------------------------------------------------------
    def _take(self, topic: str, event: Any, tick: dict[tuple[str, str], int]) -> None:
        sender = event.metadata.get("sender") or ""
        via: set[str] = set()
        for info in self.rt.directory.by_topic(topic):
            pattern = next((p for p in info.topics if topic_matches(p, topic)), topic)
            via.add(pattern)
            key = (f"topic:{pattern}", f"agent:{info.agent_id}")
            tick[key] = tick.get(key, 0) + 1
        targets = via or {_fold(topic)}
        for t in targets:  # a topic node's own count: (node, "#")
            key = (f"topic:{t}", "#")
            tick[key] = tick.get(key, 0) + 1
        if sender.startswith("agent."):
            for t in targets:
                key = (f"agent:{sender[6:]}", f"topic:{t}")
                tick[key] = tick.get(key, 0) + 1

    def rates(self) -> dict[tuple[str, str], float]:
        """Events per second on each edge over the last ``window_s`` seconds (or since opening)."""
        span = max(1.0, min(self.window_s, time.monotonic() - self._started))
        return {k: n / span for k, n in self._in_window.items() if n}

    def graph(self) -> Any:
        """The current graph as a ``networkx.DiGraph`` (nodes: ``kind``, ``label``; edges: ``kind``,
        ``rate`` in events/s over the window, ``events`` since the widget opened)."""
        import networkx as nx

        g = nx.DiGraph()
        rates = self.rates()
        for agent in self.rt.agents:
            g.add_node(f"agent:{agent.id}", kind="agent", label=agent.id)
            for pattern in agent.topics:
                if pattern != f"agent.{agent.id}.replies":  # the inbox shows once replies flow
                    g.add_node(f"topic:{pattern}", kind="topic", label=pattern)
                    g.add_edge(f"topic:{pattern}", f"agent:{agent.id}", kind="subscribe", rate=0.0, events=0)
        for (src, dst), n in self._totals.items():
            if dst == "#":
                continue
            for node in (src, dst):
                if node not in g:
                    g.add_node(node, kind=node.split(":", 1)[0], label=node.split(":", 1)[1])
            kind = "publish" if src.startswith("agent:") else "subscribe"
            g.add_edge(src, dst, kind=kind, rate=round(rates.get((src, dst), 0.0), 2), events=n)
        return g

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        tick: dict[tuple[str, str], int] = {}
        while self._sub.qsize():
            topic, event = self._sub.get_nowait()
            if not topic.startswith("system."):
                self._take(topic, event, tick)
        now = time.monotonic()
        if tick:
            self._window.append((now, tick))
            for k, n in tick.items():
                self._in_window[k] = self._in_window.get(k, 0) + n
                self._totals[k] = self._totals.get(k, 0) + n
        while self._window and self._window[0][0] < now - self.window_s:
            for k, n in self._window.popleft()[1].items():
                self._in_window[k] -= n
        g = self.graph()
        self._place(g)
        nodes = [self._node(n, d, g) for n, d in g.nodes(data=True)]
        edges = [{"source": s, "target": t, **d} for s, t, d in g.edges(data=True)]
        state = (nodes, edges)
        if state == self._last and not force:
            return None
        self._last = state
        return {"nodes": nodes, "edges": edges}

    def _node(self, n: str, d: dict[str, Any], g: Any) -> dict[str, Any]:
        x, y = self._layout.get(n, (0.0, 0.0))
        out = {"id": n, "kind": d["kind"], "label": d["label"], "x": x, "y": y}
        if d["kind"] == "agent":
            agent = self.rt.agents.get(d["label"])
            out.update(
                status=agent.status if agent is not None else "remote",
                depth=agent.mailbox_depth if agent is not None else 0,
                received=sum(e["events"] for _, _, e in g.in_edges(n, data=True)),
                published=sum(e["events"] for _, _, e in g.out_edges(n, data=True)),
            )
        else:
            rate = self.rates().get((n, "#"), 0.0)
            out.update(events=self._totals.get((n, "#"), 0), rate=round(rate, 2))
        return out

    def _place(self, g: Any) -> None:
        """Agents left, topics right, each column in a crossing-reducing order (recomputed only
        when the graph's shape changes, so nodes do not jump as rates move)."""
        key = frozenset(g.nodes) | frozenset(f"{a}->{b}" for a, b in g.edges)
        if key == self._layout_key:
            return
        self._layout_key = key
        agents = sorted(n for n, d in g.nodes(data=True) if d["kind"] == "agent")
        topics = sorted(n for n, d in g.nodes(data=True) if d["kind"] != "agent")
        pairs = [(a, b) if a.startswith("agent:") else (b, a) for a, b in g.edges]
        left, right = order_columns(agents, topics, pairs)
        self._layout = {}
        for x, column in ((0.0, left), (1.0, right)):
            for i, n in enumerate(column):
                self._layout[n] = (x, (i + 0.5) / len(column))

    def layout_crossings(self) -> int:
        """Edge crossings of the current layout (what :func:`order_columns` minimises)."""
        self.flush(force=True)
        g = self.graph()
        col = {0.0: [], 1.0: []}
        for n in sorted(self._layout, key=lambda n: self._layout[n][1]):
            col[self._layout[n][0]].append(n)
        return crossings(col[0.0], col[1.0], [(a, b) if a.startswith("agent:") else (b, a) for a, b in g.edges])

    # -- interaction ---------------------------------------------------------------------
    def _on_select(self, change: dict[str, Any]) -> None:
        node: str = change["new"]
        bi = self.bus_inspector
        if bi is None or not node.startswith("topic:"):
            return
        with bi.hold_trait_notifications():
            bi.pattern = node.split(":", 1)[1]
            bi.types = ""
        bi.flush(force=True)

    def figure(self, ax: Any = None) -> Any:
        """A matplotlib rendering of the current graph (for exports and static reports)."""
        import matplotlib.pyplot as plt
        import networkx as nx

        self.flush(force=True)
        g = self.graph()
        if ax is None:
            fig, ax = plt.subplots(figsize=(8, max(3, 0.45 * max(len(g), 1))))
        else:
            fig = ax.figure
        pos = {n: (self._layout.get(n, (0.0, 0.0))[0], -self._layout.get(n, (0.0, 0.0))[1]) for n in g.nodes}
        top = max([d["rate"] for _, _, d in g.edges(data=True)] + [1e-9])
        colors = ["#1a4d8f" if d["kind"] == "agent" else "#d97706" for _, d in g.nodes(data=True)]
        widths = [0.6 + 5 * d["rate"] / top for _, _, d in g.edges(data=True)]
        edge_colors = ["#1a4d8f" if d["kind"] == "publish" else "#9ca3af" for _, _, d in g.edges(data=True)]
        nx.draw_networkx(
            g,
            pos,
            ax=ax,
            node_color=colors,
            width=widths,
            edge_color=edge_colors,
            font_size=8,
            node_size=300,
            labels={n: d["label"] for n, d in g.nodes(data=True)},
            arrows=True,
            connectionstyle="arc3,rad=0.08",
        )
        ax.set_title(f"agents (left) and topics (right); width = events/s over the last {self.window_s:g} s")
        ax.set_axis_off()
        return fig

    def _static_html(self) -> str:
        rows = [
            [e["source"], e["kind"], e["target"], e["rate"], e["events"]]
            for e in sorted(self.edges, key=lambda e: (-e["rate"], -e["events"]))[:30]
        ]
        note = f"{len(self.nodes)} nodes; rate = events/s over the last {self.window_s:g} s"
        return table_html("Loom topology", ["from", "edge", "to", "rate/s", "events"], rows, note)


def _fold(topic: str) -> str:
    """One node for all threads' reply topics (one per request otherwise)."""
    m = _THREAD.match(topic)
    return f"thread.*.{m.group(1)}" if m else topic
