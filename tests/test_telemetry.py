"""Telemetry: one trace per user request across agents, tools and collaboration; metrics from the
parts' own counters; the instrumentation point is a no-op when telemetry is off."""

from __future__ import annotations

import asyncio

import pytest

import loom
import loom.telemetry
from loom import Event
from loom.telemetry import Instruments
from tests.peers.research import research_run


def _tree(spans):
    by_id = {s.span_id: s for s in spans}

    def chain(s):
        names = [s.name]
        while s.parent_span_id in by_id:
            s = by_id[s.parent_span_id]
            names.append(s.name)
        return names

    return by_id, chain


async def test_one_user_request_is_one_trace_across_agents_tools_and_request_reply(rt, collector):
    reply = await research_run()
    assert reply.json() == {"research": {"query": "What is Loom?", "hits": 2}}

    root = next(s for s in collector.spans() if s.name == "collab.request_reply" and s.parent_span_id is None)
    spans = collector.spans(root.trace_id)
    by_id, chain = _tree(spans)
    names = {s.name for s in spans}
    assert {"collab.request_reply", "publish", "handle", "tool.invoke"} <= names
    assert {s.trace_id for s in spans} == {root.trace_id}
    handles = {s.attributes["loom.agent"]: s for s in spans if s.name == "handle"}
    assert set(handles) >= {"planner", "researcher"}
    # the researcher's handling hangs under the planner's handling, through the request it published
    assert chain(handles["researcher"])[:4] == ["handle", "publish", "collab.request_reply", "handle"]
    tool = next(s for s in spans if s.name == "tool.invoke")
    assert tool.attributes["loom.tool"] == "research.search" and tool.attributes["loom.status"] == "ok"
    assert by_id[tool.parent_span_id].attributes["loom.agent"] == "researcher"
    # every span lives in one lane per agent: "planner", never also "agent.planner"
    assert {s.lane for s in spans} <= {"planner", "researcher", "bus", "tools", "collab", "loom"} | {root.lane}
    assert not any(s.lane.startswith("agent.") for s in spans)
    assert root.attributes["loom.collab.outcome"] == "ok"


async def test_a_failing_handler_and_a_failing_tool_are_error_spans(rt, collector):
    async def broken(event, state):
        raise ValueError("nope")

    class Broken:
        on_event = staticmethod(broken)

    await rt.agents.create("b", Broken(), topics=["t.b"])
    await rt.agents.start("b")
    await rt.bus.publish("t.b", Event("x"))
    await rt.tools.invoke("no.such.tool", {})
    await loom_until(lambda: any(s.name == "handle" for s in collector.spans()))
    handle = next(s for s in collector.spans() if s.name == "handle")
    assert handle.status == "error" and "ValueError: nope" in handle.error
    tool = next(s for s in collector.spans() if s.name == "tool.invoke")
    assert tool.status == "error" and tool.attributes["loom.status"] == "NOT_FOUND"


async def test_malformed_trace_keys_start_a_new_trace_and_break_nothing(rt, collector):
    sub = rt.bus.subscribe("t.x")
    bad = {"trace_id": "zz" * 16, "span_id": "0" * 16, "trace_flags": "??"}
    assert await rt.bus.publish("t.x", Event("x", metadata=bad)) == 1
    _, got = await sub.get()
    span = next(s for s in collector.spans() if s.name == "publish")
    assert span.parent_span_id is None and got.metadata["trace_id"] == span.trace_id
    assert got.metadata["span_id"] == span.span_id
    sub.close()


async def test_a_trace_from_another_process_is_continued(rt, collector):
    sub = rt.bus.subscribe("t.remote")
    remote = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "trace_flags": "01"}
    await rt.bus.publish("t.remote", Event("x", metadata=remote))
    span = next(s for s in collector.spans() if s.name == "publish")
    assert span.trace_id == remote["trace_id"] and span.parent_span_id == remote["span_id"]
    sub.close()


async def test_init_is_idempotent_and_off_means_no_spans(rt):
    col = loom.telemetry.init_telemetry()
    assert loom.telemetry.init_telemetry() is col and loom.telemetry.telemetry_enabled()
    loom.telemetry.disable_telemetry()
    col.clear()
    sub = rt.bus.subscribe("t.off")
    await rt.bus.publish("t.off", Event("x"))
    _, got = await sub.get()
    assert col.spans() == [] and "trace_id" not in got.metadata  # off: events go out untouched
    sub.close()


async def test_metrics_come_from_the_parts_counters(rt, collector):
    """Counts of this runtime's bus, agent and tools, read through the OpenTelemetry meters (the
    process's totals include other runtimes: names of its own, and differences)."""
    got = []
    agent, topic = "metrics_counter", "metrics.own.t"

    async def on(event, state):
        got.append(event)

    class Counter:
        on_event = staticmethod(on)

    def value(snap, name, **attrs):
        return sum(p["value"] for p in snap.get(name, []) if all(p["attributes"].get(k) == v for k, v in attrs.items()))

    before = loom.telemetry.metrics_snapshot()
    await rt.agents.create(agent, Counter(), topics=[topic])
    await rt.agents.start(agent)
    for _ in range(3):
        await rt.bus.publish(topic, Event("x"))
    await rt.tools.invoke("weather.get", {"location": ""})  # refused by its schema: an error call
    await loom_until(lambda: len(got) == 3)
    snap = loom.telemetry.metrics_snapshot()

    def grew(name, **attrs):
        return value(snap, name, **attrs) - value(before, name, **attrs)

    assert grew("loom.bus.published", **{"loom.topic": topic}) == 3
    assert grew("loom.bus.delivered", **{"loom.topic": topic}) == 3
    assert grew("loom.agent.handled", **{"loom.agent": agent, "loom.status": "ok"}) == 3
    assert grew("loom.tool.calls", **{"loom.tool": "weather.get", "loom.status": "INVALID_PARAMS"}) == 1
    assert value(snap, "loom.agent.mailbox_depth", **{"loom.agent": agent}) == 0
    durations = [p for p in snap["loom.tool.duration"] if p["attributes"].get("loom.tool") == "weather.get"]
    assert (
        sum(p["count"] for p in durations)
        - sum(
            p["count"]
            for p in before.get("loom.tool.duration", [])
            if p["attributes"].get("loom.tool") == "weather.get"
        )
        == 1
    )


def test_instruments_without_telemetry_are_a_shared_noop():
    inst = Instruments()
    assert inst.tracer is None
    with inst.span("anything", {"a": 1}) as span:
        span.set("b", 2)
        assert span.recording is False
    assert inst.watched("t") is False  # unbound: no note would reach anyone
    inst.note("t", Event("x"))  # and a note goes nowhere, without error


async def test_notes_reach_a_bus_only_when_someone_listens(rt):
    assert not rt.instruments.watched("tool.call")
    sub = rt.bus.subscribe("tool.*")
    assert rt.instruments.watched("tool.call")
    await rt.tools.invoke("weather.get", {"city": "Oslo"})
    kinds = []
    while sub.qsize():
        kinds.append(sub.get_nowait().event.type)
    assert kinds == ["tool.call", "tool.result"]
    sub.close()


async def loom_until(cond, timeout: float = 2.0) -> None:
    from tests.conftest import until

    await until(cond, timeout)


def test_a_broken_metric_source_breaks_nothing(collector):
    inst = Instruments()

    def broken():
        raise RuntimeError("source gone")

    inst.observe("loom.bus.published", broken)
    inst.observe("loom.bus.published", lambda: [(5, {"loom.topic": "ok.t"})])
    assert inst.observations("loom.bus.published") == [(5, {"loom.topic": "ok.t"})]
    snap = loom.telemetry.metrics_snapshot()  # collection goes on past the broken source
    assert any(p["attributes"] == {"loom.topic": "ok.t"} and p["value"] >= 5 for p in snap["loom.bus.published"])


def test_the_collector_is_a_bounded_ring_that_counts_what_fell_out():
    from opentelemetry.sdk.trace import TracerProvider

    from loom.telemetry import SpanCollector

    col = SpanCollector(capacity=3)
    provider = TracerProvider()
    provider.add_span_processor(col)
    tracer = provider.get_tracer("t")
    for i in range(5):
        tracer.start_span(f"s{i}").end()
    assert [s.name for s in col.spans()] == ["s2", "s3", "s4"] and col.evicted == 2 and col.collected == 5
    assert len(col.traces()) == 3 and col.spans(limit=1)[0].name == "s4"
    with pytest.raises(ValueError):
        SpanCollector(capacity=0)


async def test_a_replay_is_one_new_trace_not_a_continuation_of_the_recorded_ones(tmp_path, collector):
    path = tmp_path / "s.db"
    async with loom.Loom(record=path, native_tools=()) as rec:
        sub = rec.bus.subscribe("r.t")
        await rec.bus.publish("r.t", Event("x"))
        (_, recorded) = await sub.get()
        sub.close()
    old_trace = recorded.metadata["trace_id"]
    collector.clear()
    async with loom.Loom(native_tools=()) as rt:
        sub = rt.bus.subscribe("r.t")
        await rt.replay(path, speed="max")
        (_, replayed) = await sub.get()
        sub.close()
    replay = next(s for s in collector.spans() if s.name == "replay")
    publish = next(s for s in collector.spans() if s.name == "publish" and s.attributes["loom.topic"] == "r.t")
    assert publish.parent_span_id == replay.span_id and publish.trace_id == replay.trace_id != old_trace
    assert replayed.metadata["trace_id"] == replay.trace_id and replayed.id == recorded.id  # the same event


def test_the_collector_can_be_looked_at_without_turning_telemetry_on(collector):
    loom.telemetry.disable_telemetry()
    assert loom.telemetry.current_collector() is collector and not loom.telemetry.telemetry_enabled()


def test_the_console_exporter_prints_spans_when_otel_traces_exporter_says_console():
    import os
    import subprocess
    import sys

    code = (
        "import asyncio, loom, loom.telemetry\n"
        "loom.telemetry.init_telemetry()\n"
        "async def main():\n"
        "    async with loom.Loom(native_tools=()) as rt:\n"
        "        sub = rt.bus.subscribe('c.t')\n"
        "        await rt.bus.publish('c.t', loom.Event('x'))\n"
        "        sub.close()\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "console-test"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert '"name": "publish"' in out.stdout and '"service.name": "console-test"' in out.stdout
    assert '"loom.topic": "c.t"' in out.stdout


async def test_an_unsampled_trace_still_runs_its_tools_and_counts_their_metrics(rt, collector):
    got = []

    async def caller(event, state):
        got.append(await rt.tools.invoke("weather.nope", {}))

    class Caller:
        on_event = staticmethod(caller)

    await rt.agents.create("sampled_out", Caller(), topics=["u.t"])
    await rt.agents.start("sampled_out")
    unsampled = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "trace_flags": "00"}
    await rt.bus.publish("u.t", Event("x", metadata=unsampled))
    await loom_until(lambda: len(got) == 1)
    assert got[0].error.code == "NOT_FOUND"  # the call ran (and failed as it should), nothing raised
    assert not [s for s in collector.spans() if s.trace_id == unsampled["trace_id"]]  # sampled out
    assert rt.agents["sampled_out"].failed == 0


def test_a_sampler_that_drops_everything_breaks_nothing():
    import os
    import subprocess
    import sys

    code = (
        "import asyncio, loom, loom.telemetry\n"
        "col = loom.telemetry.init_telemetry()\n"
        "async def main():\n"
        "    async with loom.Loom() as rt:\n"
        "        r = await rt.tools.invoke('fs.read', {'path': 'missing.txt'})\n"
        "        print('code', r.error.code, 'spans', len(col.spans()))\n"
        "        snap = loom.telemetry.metrics_snapshot()\n"
        "        print('duration', sum(p['count'] for p in snap.get('loom.tool.duration', [])))\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "OTEL_TRACES_SAMPLER": "always_off"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert "spans 0" in out.stdout and "duration 1" in out.stdout, out.stdout + out.stderr
    assert "code" in out.stdout and "Traceback" not in out.stderr


async def test_a_counter_never_goes_down_when_a_runtime_stops(collector):
    def published(topic):
        snap = loom.telemetry.metrics_snapshot()
        return sum(p["value"] for p in snap.get("loom.bus.published", []) if p["attributes"] == {"loom.topic": topic})

    a = await loom.Loom(native_tools=()).start()
    b = await loom.Loom(native_tools=()).start()
    for rt in (a, b, b):
        await rt.bus.publish("gone.t", Event("x"))
    before = published("gone.t")
    assert before >= 3
    await b.stop()  # its bus closes: no longer a live source, its counts retired
    assert published("gone.t") == before
    await a.bus.publish("gone.t", Event("x"))
    assert published("gone.t") == before + 1
    await a.stop()


async def test_a_task_the_runtime_owns_does_not_inherit_the_span_that_spawned_it(rt, collector):
    sub = rt.bus.subscribe("later.t")

    async def later():
        await asyncio.sleep(0.01)
        await rt.bus.publish("later.t", Event("x"))

    with rt.instruments.span("spawner") as spawner:
        task = rt.spawn(later(), name="loom.test.later")
    await task
    _, got = await sub.get()
    publish = next(s for s in collector.spans() if s.name == "publish" and s.attributes["loom.topic"] == "later.t")
    assert publish.parent_span_id is None and got.metadata["trace_id"] == publish.trace_id
    assert spawner.attrs == {}  # the spawner's own span is untouched
    sub.close()
