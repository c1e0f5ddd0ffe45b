"""Telemetry across processes: one trace through the bridge (both stream kinds), bridge metrics,
OTLP export to a real local receiver, and OTLP's faults (no exporter package, no endpoint)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import loom
import loom.telemetry
from loom import Agent
from tests.conftest import until
from tests.peers.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[1]
PEER = str(ROOT / "tests" / "peers" / "traced_agent.py")

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver():
    """An OTLP/gRPC receiver on 127.0.0.1 (a free port), stopped after the test."""
    r = OtlpReceiver().start()
    try:
        yield r
    finally:
        r.stop()


@loom.capability("hub.lookup", version="1.0")
def lookup(q: str) -> dict:
    """The hub's tool the remote agent calls."""
    return {"q": q, "hits": len(q)}


def _env(**otel: str) -> dict[str, str]:
    """This process's environment without any OTEL_* of the caller's, plus ``otel``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, "PYTHONUNBUFFERED": "1", **otel}


def _dead_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_dict(record) -> dict:
    return {
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "parent_span_id": record.parent_span_id,
        "name": record.name,
        "service": record.service,
        "attributes": dict(record.attributes),
    }


@pytest.mark.parametrize("stream", ["local", "grpc"])
async def test_one_trace_across_processes_through_the_bridge(rt, collector, receiver, stream):
    rt.tools.register(lookup)
    server = await rt.start_bridge(port=0)
    env = _env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME="remote-agent",
        OTEL_BSP_SCHEDULE_DELAY="50",  # spans leave within 50 ms
        LOOM_BRIDGE_LOCAL="1" if stream == "local" else "0",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        PEER,
        "agent",
        f"127.0.0.1:{server.port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.split() == [b"ready", stream.encode()], line + await proc.stderr.read()
        snap = loom.telemetry.metrics_snapshot()
        assert [p["value"] for p in snap["loom.bridge.connections"]] == [1]  # the agent's stream
        before = {p["attributes"]["loom.direction"]: p["value"] for p in snap["loom.bridge.bytes"]}
        collector.clear()

        # one user request: the remote agent calls a hub tool (ForwardAction) and replies; then
        # the hub calls the remote agent's capability (an ActionCall): all under one root span
        with rt.instruments.span("test.request"):
            reply = await loom.request_reply("svc.traced", "hello", timeout=10)
            upper = await rt.tools.invoke("text.upper", {"text": "abc"})
        assert reply is not None and reply.json() == {"by": "traced", "found": {"q": "hello", "hits": 5}}
        assert upper.ok and upper.output == "ABC"

        root = next(s for s in collector.spans() if s.name == "test.request")
        trace = root.trace_id
        await until(lambda: {"handle", "bridge.receive"} <= {s["name"] for s in receiver.spans()}, 15)
        remote = [s for s in receiver.spans() if s["trace_id"] == trace]
        assert {s["service"] for s in remote} == {"remote-agent"}
        hub = [_as_dict(s) for s in collector.spans(trace)]
        by_id = {s["span_id"]: s for s in [*hub, *remote]}

        def chain(span: dict) -> list[tuple[str, str]]:
            out = [(span["name"], span["service"])]
            while span["parent_span_id"] in by_id:
                span = by_id[span["parent_span_id"]]
                out.append((span["name"], span["service"]))
            return out

        ours = root.service
        # ONE trace: everything the remote agent did for the request and the call is in it
        assert {s["trace_id"] for s in receiver.spans() if s["name"] in ("handle", "bridge.receive")} == {trace}
        handle = next(s for s in remote if s["name"] == "handle")
        assert handle["attributes"]["loom.agent"] == "traced"
        assert chain(handle) == [
            ("handle", "remote-agent"),
            ("publish", "remote-agent"),  # the agent's local bus, as the delivery arrived
            ("bridge.forward", ours),  # the hub handing it to the agent's stream
            ("publish", ours),
            ("collab.request_reply", ours),
            ("test.request", ours),
        ]
        forward = by_id[by_id[handle["parent_span_id"]]["parent_span_id"]]
        assert forward["attributes"]["loom.agent"] == "traced"
        assert forward["attributes"]["loom.component"] == "bridge"
        assert forward["attributes"]["loom.topic"] == "svc.traced"
        # the agent's tool call: its bridge.send -> the hub's bridge.receive -> tool.invoke
        tool = next(s for s in hub if s["name"] == "tool.invoke" and s["attributes"]["loom.tool"] == "hub.lookup")
        assert chain(tool)[:4] == [
            ("tool.invoke", ours),
            ("bridge.receive", ours),
            ("bridge.send", "remote-agent"),
            ("handle", "remote-agent"),
        ]
        # its reply: bridge.send -> the hub's bridge.receive -> the hub's publish
        receives = [s for s in hub if s["name"] == "bridge.receive" and "loom.topic" in s["attributes"]]
        assert receives and all(
            chain(s)[1:3] == [("bridge.send", "remote-agent"), ("handle", "remote-agent")] for s in receives
        )
        assert any(s["name"] == "publish" and s["parent_span_id"] == receives[0]["span_id"] for s in hub)
        # the hub's ActionCall: tool.invoke -> bridge.forward -> the agent's bridge.receive
        answer = next(s for s in remote if s["name"] == "bridge.receive")
        assert answer["attributes"] == {
            "loom.agent": "traced",
            "loom.component": "bridge",
            "loom.tool": "text.upper",
            "loom.status": "ok",
        }
        assert chain(answer)[:4] == [
            ("bridge.receive", "remote-agent"),
            ("bridge.forward", ours),
            ("tool.invoke", ours),
            ("test.request", ours),
        ]

        # bytes both ways went up with the traffic (counted on the stream in use and gRPC's RPCs)
        snap = loom.telemetry.metrics_snapshot()
        after = {p["attributes"]["loom.direction"]: p["value"] for p in snap["loom.bridge.bytes"]}
        assert after["in"] > before["in"] and after["out"] > before["out"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, (await proc.stderr.read()).decode()[-2000:]
    await until(lambda: loom.telemetry.metrics_snapshot()["loom.bridge.connections"][0]["value"] == 0, 5)


async def test_bridge_metrics_count_the_same_host_streams_frames_exactly(rt, collector):
    server = await rt.start_bridge(port=0)
    got: list = []

    async def on(ctx, topic, event):
        got.append(event)

    agent = await Agent("sink", topics=["bytes.t"], on_event=on, address=f"127.0.0.1:{server.port}").start()
    try:
        assert agent._transport.stream_kind == "local"
        transport_stream = agent._transport._stream  # the SDK's end of the same-host stream
        sent, received = transport_stream.count.outbound, transport_stream.count.inbound
        snap = loom.telemetry.metrics_snapshot()
        before = {p["attributes"]["loom.direction"]: p["value"] for p in snap["loom.bridge.bytes"]}
        for i in range(20):
            await rt.bus.publish("bytes.t", loom.Event.from_json("x", {"i": i}))
        await until(lambda: len(got) == 20)
        snap = loom.telemetry.metrics_snapshot()
        after = {p["attributes"]["loom.direction"]: p["value"] for p in snap["loom.bridge.bytes"]}
        # what the hub wrote is what the agent's end read, frame for frame (no gRPC call meanwhile)
        assert after["out"] - before["out"] == transport_stream.count.inbound - received > 20 * 20
        assert after["in"] - before["in"] == transport_stream.count.outbound - sent
    finally:
        await agent.stop()
    await until(lambda: loom.telemetry.metrics_snapshot()["loom.bridge.connections"][0]["value"] == 0)
    await rt.stop_bridge()
    assert not loom.telemetry.metrics_snapshot().get("loom.bridge.connections")  # forgotten with the bridge


async def test_with_telemetry_off_events_cross_the_bridge_untouched(rt):
    assert not loom.telemetry.telemetry_enabled()
    server = await rt.start_bridge(port=0)
    got: list = []

    async def on(ctx, topic, event):
        got.append(event)
        await ctx.emit("off.back", {"seen": event.json()})

    sub = rt.bus.subscribe("off.back")
    agent = await Agent("plain", topics=["off.t"], on_event=on, address=f"127.0.0.1:{server.port}").start()
    try:
        await rt.bus.publish("off.t", loom.Event.from_json("x", {"n": 1}))
        _, back = await asyncio.wait_for(sub.get(), 5)
        assert back.json() == {"seen": {"n": 1}}
        for event in (got[0], back):  # no span, so no trace keys, either way
            assert not {"trace_id", "span_id", "trace_flags"} & set(event.metadata), event.metadata
    finally:
        await agent.stop()
        sub.close()


async def test_a_process_configured_only_by_otel_variables_exports_spans_and_metrics(receiver):
    env = _env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_SERVICE_NAME="loom-env-test",
        OTEL_METRIC_EXPORT_INTERVAL="200",
    )
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, PEER, "runtime"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    spans = receiver.spans()
    assert {s["service"] for s in spans} == {"loom-env-test"}
    assert {"collab.request_reply", "publish", "handle", "tool.invoke"} <= {s["name"] for s in spans}
    metrics = receiver.metrics()
    assert any(p["value"] >= 1 for p in metrics["loom.bus.published"])
    calls = [
        p for p in metrics["loom.tool.calls"] if p["attributes"] == {"loom.tool": "hub.lookup", "loom.status": "ok"}
    ]
    assert calls and calls[-1]["value"] == 1 and calls[-1]["service"] == "loom-env-test"


_BLOCK_OTLP = """
import importlib.abc, sys

class NoOtlpExporter(importlib.abc.MetaPathFinder):
    # what a missing package looks like to an import: ModuleNotFoundError for its modules
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry.exporter" or name.startswith("opentelemetry.exporter."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoOtlpExporter())
import loom.telemetry
from loom.errors import UsageError

try:
    loom.telemetry.init_telemetry(otlp_endpoint="http://127.0.0.1:4317")
except UsageError as exc:
    print("UsageError:", exc)
print("enabled:", loom.telemetry.telemetry_enabled())
loom.telemetry.init_telemetry()  # without OTLP it still works
print("enabled:", loom.telemetry.telemetry_enabled())
"""


def test_otlp_without_the_exporter_package_is_a_clear_usage_error():
    done = subprocess.run(
        [sys.executable, "-c", _BLOCK_OTLP], env=_env(), capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("UsageError: OTLP export needs the 'otlp' extra"), lines
    assert "pip install 'loom-notebook[otlp]'" in lines[0] and "opentelemetry.exporter" in lines[0]
    assert lines[1:] == ["enabled: False", "enabled: True"]  # the failed call left nothing half-on


def test_an_unreachable_otlp_endpoint_neither_breaks_nor_slows_the_runtime():
    def run(**otel: str) -> tuple[dict, dict, str]:
        done = subprocess.run(
            [sys.executable, PEER, "busy"],
            env=_env(OTEL_SERVICE_NAME="loom-unreachable", **otel),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        work, flush = (json.loads(line) for line in done.stdout.splitlines())
        return work, flush, done.stderr

    base, _, _ = run()  # telemetry on, no exporter: the reference
    work, flush, stderr = run(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{_dead_port()}",
        OTEL_BSP_SCHEDULE_DELAY="20",  # the exporter fails over and over while the runtime works
        OTEL_METRIC_EXPORT_INTERVAL="50",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",  # bounds each export's retries (seconds), so the final flush
    )
    assert work["requests"] == 200 and work["handle_spans"] == 200  # every span still reached the collector
    assert work["seconds"] < max(1.0, 5 * base["seconds"]), (work, base)  # the exporter's thread pays, not the loop
    assert "Failed to export" in stderr or "Transient error" in stderr  # the exporter's own log says why
    assert flush["flush_seconds"] < 10  # bounded by the exporter's timeout


async def test_upstream_clients_trace_keys_are_continued_and_bad_ones_start_a_new_trace(rt, collector):
    """The keys ride in the protocol's own maps (Event.metadata, ActionCall.headers): an upstream
    client that sends them is continued; garbage starts a new trace and breaks nothing."""
    from loom.bridge._grpc import grpc
    from loom.bridge._pb.loom.v1 import action_pb2, bridge_pb2, bridge_pb2_grpc
    from tests.test_bridge_server import Stream, ev

    rt.tools.register(lookup)
    server = await rt.start_bridge(port=0)
    theirs = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "trace_flags": "01"}
    bad = {"trace_id": "zz" * 16, "span_id": "0" * 16, "trace_flags": "??"}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = bridge_pb2_grpc.BridgeStub(channel)
        ok = await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id="up", subscribed_topics=["up.*"]))
        assert ok.success
        stream = Stream(stub, "up")
        await stream.ready()
        stream.send(publish=bridge_pb2.Publish(topic="up.a", event=ev("e1", "t", b"1", **theirs)))
        stream.send(publish=bridge_pb2.Publish(topic="up.b", event=ev("e2", "t", b"2", **bad)))
        got = [(await stream.next("delivery")).delivery for _ in range(2)]  # its own events come back
        result = await stub.ForwardAction(
            action_pb2.ActionCall(id="c1", capability="hub.lookup", payload=b'{"q": "ab"}', headers=theirs)
        )
        assert result.status == action_pb2.ACTION_OK
        stream.close()

    receives = {
        s.attributes.get("loom.topic") or s.attributes["loom.tool"]: s
        for s in collector.spans()
        if s.name == "bridge.receive"
    }
    assert receives["up.a"].trace_id == theirs["trace_id"] and receives["up.a"].parent_span_id == theirs["span_id"]
    assert receives["up.b"].parent_span_id is None and receives["up.b"].trace_id != theirs["trace_id"]
    assert receives["up.a"].attributes["loom.agent"] == "up"
    call = receives["hub.lookup"]
    assert call.trace_id == theirs["trace_id"] and call.parent_span_id == theirs["span_id"]
    tool = next(s for s in collector.spans() if s.name == "tool.invoke")
    assert tool.parent_span_id == call.span_id
    # what the upstream client is sent carries the hub's bridge.forward span: it can continue it
    forwards = {s.span_id: s for s in collector.spans() if s.name == "bridge.forward"}
    for d in got:
        md = dict(d.event.metadata)
        assert md["span_id"] in forwards and forwards[md["span_id"]].trace_id == md["trace_id"]
        assert forwards[md["span_id"]].attributes["loom.topic"] == d.concrete_topic
