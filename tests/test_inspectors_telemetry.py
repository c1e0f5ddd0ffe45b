"""The inspectors that read telemetry: TraceTimeline (real spans), Topology (publish edges, rates,
layout), MetricsView (rates from the parts' counters). Real runtimes, real agents, real spans."""

from __future__ import annotations

import asyncio

import loom
import loom.telemetry
from loom import Agent, Event
from loom.events.qos import Overflow, QoS
from loom.notebook import BusInspector, MetricsView, Topology, TraceTimeline
from loom.notebook.topology import crossings, order_columns
from loom.notebook.trace_timeline import HINT_OFF, axis_ticks
from tests.conftest import until
from tests.peers.research import research_run


async def _research_run(rt) -> None:
    reply = await research_run()
    assert reply.json()["research"]["hits"] == 2


async def test_timeline_draws_the_real_spans_of_a_run_nested_in_one_lane_per_agent(rt, collector):
    view = TraceTimeline(rt, collector)
    watcher = rt.bus.subscribe("tool.*")  # someone watches the tool notes: they are span events too
    await _research_run(rt)
    await until(lambda: any(s.name == "collab.request_reply" and s.parent_span_id is None for s in collector.spans()))
    view.flush()
    assert view.hint == ""
    names = [lane["name"] for lane in view.lanes]
    assert len(names) == len(set(names))  # one lane each
    kinds = {lane["name"]: lane["kind"] for lane in view.lanes}
    assert kinds["planner"] == kinds["researcher"] == "agent" and names[:2] == ["planner", "researcher"]
    assert not any(n.startswith(("agent.", "loom.")) for n in names)
    by_id = {i["id"]: i for i in view.items}
    tool = next(i for i in view.items if i["name"] == "tool.invoke")
    handle = by_id[tool["parent"]]
    # the tool call is drawn one row under the handling that made it, one level deeper in the trace
    assert tool["lane"] == handle["lane"] == "researcher" and handle["name"] == "handle"
    assert tool["row"] == handle["row"] + 1 and tool["depth"] == handle["depth"] + 1
    assert handle["start"] <= tool["start"] <= tool["end"] <= handle["end"]
    assert max(i["depth"] for i in view.items) >= 5  # request_reply > publish > handle > ... > tool
    assert {i["name"] for i in view.items} >= {"publish", "handle", "tool.invoke", "collab.request_reply"}
    assert view.ticks[0]["label"] == "0 ms" and view.ticks[-1]["t"] <= view.span_ms
    assert len(view.traces) == 1 and "collab.request_reply" in view.traces[0]["label"]

    view.selected = tool["id"]  # what a click does
    d = view.detail
    assert d["attributes"]["loom.tool"] == "research.search" and d["depth"] == tool["depth"]
    assert [e["name"] for e in d["events"]] == ["tool.call", "tool.result"] and d["parent_name"] == "handle"
    topics = [e["topic"] for e in d["bus_events"]]
    assert topics[:2] == ["topic.plan", "topic.research"] and "agent.planner.replies" in topics
    assert all(e["event_id"] for e in d["bus_events"])
    watcher.close()
    html = view._static_html()
    assert "researcher" in html and "tool.invoke research.search" in html
    assert view.figure().axes
    view.close()


async def test_an_agent_has_one_lane_although_spans_name_it_agent_x_and_x(rt, collector):
    """The old timeline drew ``agent.ann`` (what ann sent) and ``ann`` (what reached ann) apart; spans
    now name an agent by its bare id whichever part reports for it."""

    async def ann(ctx, topic, event):
        await ctx.emit("news.out", b"done")  # a publish span: its sender is "agent.ann"
        await ctx.reply(ctx.thread(event), b"ok")  # the handle span: the agent "ann"

    await Agent("ann", topics=["work.ann"], on_event=ann).start()
    boss = await Agent("boss").start()
    view = TraceTimeline(rt, collector)
    await boss.ctx.request(None, "work.ann", b"go", timeout_ms=1000)
    await until(lambda: sum(s.name == "handle" for s in collector.spans()) >= 1)
    await asyncio.sleep(0.02)
    raw = {str(s.attributes.get("loom.agent")) for s in collector.spans()}
    assert "ann" in raw and not any(a.startswith("agent.") for a in raw)  # one spelling, at the source
    view.flush()
    names = [lane["name"] for lane in view.lanes]
    assert names.count("ann") == 1 and "agent.ann" not in names and "agent.boss" not in names
    in_ann = {i["name"] for i in view.items if i["lane"] == "ann"}
    assert {"handle", "publish"} <= in_ann
    view.close()


async def test_timeline_trace_filter_error_spans_and_the_bus_link(rt, collector):
    async def broken(ctx, topic, event):
        raise ValueError("nope")

    await Agent("b", topics=["t.b"], on_event=broken).start()
    bus = BusInspector(rt)
    view = TraceTimeline(rt, collector, bus_inspector=bus)
    await rt.bus.publish("t.b", Event("x"))
    await rt.bus.publish("t.other", Event("y"))
    await until(lambda: any(s.name == "handle" for s in collector.spans()))
    view.flush()
    assert len(view.traces) == 2 and view.linked
    failing = next(i for i in view.items if i["name"] == "handle")
    assert failing["status"] == "error" and failing["lane"] == "b"
    view.trace = failing["trace"]
    view.flush()
    assert {i["trace"] for i in view.items} == {failing["trace"]}
    view.selected = failing["id"]
    assert "ValueError: nope" in view.detail["error"]
    publish = next(i for i in view.items if i["name"] == "publish")
    assert view.show_in_bus(publish["id"]) is True
    assert bus.pattern == "t.b" and bus.types == "x" and [r["topic"] for r in bus.rows] == ["t.b"]
    view.trace = ""
    view.flush()
    assert len({i["trace"] for i in view.items}) == 2
    bus.close()
    view.close()


async def test_timeline_says_how_to_turn_telemetry_on(rt):
    from loom.telemetry.collector import SpanCollector

    loom.telemetry.disable_telemetry()
    view = TraceTimeline(rt, SpanCollector())
    assert view.hint == HINT_OFF and view.items == [] and HINT_OFF in view._repr_html_()
    view.close()


def test_axis_ticks_are_round_and_labelled_in_ms_or_s():
    assert [t["label"] for t in axis_ticks(17)] == ["0 ms", "5 ms", "10 ms", "15 ms"]
    assert [t["label"] for t in axis_ticks(1.7)] == ["0 ms", "0.5 ms", "1 ms", "1.5 ms"]
    assert [t["label"] for t in axis_ticks(2500)][-3:] == ["1.5 s", "2 s", "2.5 s"]


async def test_topology_has_publish_edges_and_widths_by_recent_rate(rt):
    async def relay(ctx, topic, event):
        await ctx.emit("out.x", event.payload)

    await Agent("relay", topics=["in.*"], on_event=relay).start()
    await Agent("sink", topics=["out.>"], on_event=lambda c, t, e: None).start()
    bus = BusInspector(rt)
    view = Topology(rt, window_s=0.3, bus_inspector=bus)
    edges = {(e["source"], e["target"]): e for e in view.edges}
    assert edges[("topic:in.*", "agent:relay")]["kind"] == "subscribe"  # from the directory, before traffic
    assert not any(e["kind"] == "publish" for e in view.edges)
    for _ in range(30):
        await rt.bus.publish("in.a", Event("t"))
    await until(lambda: rt.agents["sink"].handled == 30)
    view.flush()
    edges = {(e["source"], e["target"]): e for e in view.edges}
    pub = edges[("agent:relay", "topic:out.>")]  # the relay's events reach the sink through "out.>"
    assert pub["kind"] == "publish" and pub["events"] == 30 and pub["rate"] > 0
    assert edges[("topic:out.>", "agent:sink")]["events"] == 30
    nodes = {n["id"]: n for n in view.nodes}
    assert nodes["agent:relay"]["published"] == 30 and nodes["agent:relay"]["received"] == 30
    assert nodes["topic:out.>"]["events"] == 30 and nodes["topic:out.>"]["x"] == 1.0 and nodes["agent:sink"]["x"] == 0.0
    await asyncio.sleep(0.4)  # the burst leaves the window: the rate falls to 0, the count stays
    view.flush()
    edges = {(e["source"], e["target"]): e for e in view.edges}
    assert edges[("agent:relay", "topic:out.>")]["rate"] == 0 and edges[("agent:relay", "topic:out.>")]["events"] == 30
    view.selected = "topic:out.>"  # a click on a topic filters the bus inspector
    assert bus.pattern == "out.>" and {r["topic"] for r in bus.rows} == {"out.x"}
    assert "publish" in view._static_html() and view.figure().axes
    bus.close()
    view.close()


def test_barycentric_order_removes_the_crossings_of_a_small_graph():
    pairs = [("a", "z"), ("b", "y"), ("c", "x"), ("c", "w")]
    assert crossings(["a", "b", "c"], ["w", "x", "y", "z"], pairs) == 5  # alphabetical: every edge crosses
    left, right = order_columns(["a", "b", "c"], ["w", "x", "y", "z"], pairs)
    assert crossings(left, right, pairs) == 0 and sorted(left) == ["a", "b", "c"]
    # notebook 07's graph: the barycentres of "auditor" and "coordinator" tie; one crossing is the least
    # possible (analyst and coordinator both reach ask.* and coordinator.replies)
    edges = {"analyst": "cog tok replies ask", "coordinator": "replies ask audit thread plan", "auditor": "audit"}
    pairs = [(a, t) for a, ts in edges.items() for t in ts.split()]
    agents, topics = sorted(edges), sorted({t for _, t in pairs})
    assert crossings(agents, topics, pairs) == 14  # alphabetical
    assert crossings(*order_columns(agents, topics, pairs), pairs) == 1


async def test_topology_layout_keeps_agents_and_topics_apart_without_crossings(rt):
    for agent, topic in (("a", "t.z"), ("b", "t.y"), ("c", "t.x")):
        await Agent(agent, topics=[topic]).start()
    view = Topology(rt)
    nodes = {n["id"]: n for n in view.nodes}
    assert {n["x"] for n in nodes.values() if n["kind"] == "agent"} == {0.0}
    assert {n["x"] for n in nodes.values() if n["kind"] == "topic"} == {1.0}
    pairs = [(f"agent:{a}", f"topic:{t}") for a, t in (("a", "t.z"), ("b", "t.y"), ("c", "t.x"))]
    assert crossings(["agent:a", "agent:b", "agent:c"], ["topic:t.x", "topic:t.y", "topic:t.z"], pairs) == 3
    assert view.layout_crossings() == 0
    view.close()


async def test_metrics_view_rates_drops_latency_mailboxes_and_tools(rt):
    @loom.tool("calc.div")
    def div(a: float, b: float) -> float:
        """Divide."""
        return a / b

    rt.tools.register(div)
    await Agent("metered", topics=["mv.t"], on_event=lambda c, t, e: None).start()
    slow = rt.bus.subscribe("mv.t", qos=QoS.REALTIME, maxsize=1, overflow=Overflow.DROP_NEWEST, name="slow")
    view = MetricsView(rt)
    for _ in range(200):
        await rt.bus.publish("mv.t", Event("x"))
    await until(lambda: rt.agents["metered"].handled == 200)
    await rt.tools.invoke("calc.div", {"a": 1, "b": 2})
    await rt.tools.invoke("calc.div", {"a": 1, "b": 0})
    await asyncio.sleep(0.05)
    view.flush()
    assert view.series["published"][-1] > 200 and view.rate("published") == view.current["published"]
    assert view.current["delivered"] > 0 and view.current["published_total"] >= 200
    assert view.drops[0]["reason"] and view.drops[0]["count"] == 199 and "mv.t: 199" in view.drops[0]["topics"]
    assert view.current["dropped"] > 0
    tools = {t["tool"]: t for t in view.tools}
    assert tools["calc.div"]["calls"] == 2 and tools["calc.div"]["errors"] == 1 and tools["calc.div"]["rate"] > 0
    boxes = {m["agent"]: m for m in view.mailboxes}
    assert boxes["metered"]["handled"] == 200 and boxes["metered"]["depth"] == 0
    lat = next(r for r in view.latency if "metered" in r["subscription"])
    assert lat["samples"] > 0 and lat["p99_us"] >= lat["p50_us"] > 0
    await asyncio.sleep(0.05)
    view.flush()  # nothing new: the rates fall to 0, the totals stay
    assert view.series["published"][-1] == 0 and view.current["published_total"] >= 200
    assert "published/s" in view._static_html() and view.figure().axes
    slow.close()
    view.close()


async def test_metrics_view_shows_llm_tokens_per_provider_and_model_while_telemetry_is_on(rt, collector, server):
    from loom.cognitive import LLMClient, LLMConfig
    from tests.peers.scripted_openai import text

    server.push(text("Paris.", usage=(21, 8)), text("Rome.", usage=(19, 4)))
    llm = LLMClient(LLMConfig(name="metrics-scripted", base_url=server.base_url, api_key="k", model="metrics-m"))
    for question in ("Capital of France?", "Capital of Italy?"):
        await llm.chat([{"role": "user", "content": question}])
    await llm.aclose()
    view = MetricsView(rt)
    row = next(r for r in view.llm if (r["provider"], r["model"]) == ("metrics-scripted", "metrics-m"))
    assert (row["calls"], row["input"], row["output"]) == (2, 40, 12) and row["mean_ms"] > 0
    assert "metrics-scripted" in view._static_html()
    view.close()
