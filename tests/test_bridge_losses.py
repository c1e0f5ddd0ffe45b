"""No event for a bridged agent vanishes without a counter: an oversized one is counted and the
agent told while its stream stays up; while an agent reconnects its events are kept (bounded) and
delivered when it returns, or counted as dropped with a reason."""

from __future__ import annotations

import asyncio

import pytest

import loom
from loom import Agent, Loom
from loom.bridge._grpc import grpc
from loom.bridge._pb.loom.v1 import bridge_pb2, bridge_pb2_grpc
from tests.conftest import until
from tests.test_bridge_server import Stream

BIG = 5 * 1024 * 1024  # over the stream's 4 MB message limit


@pytest.fixture
async def hub(tmp_path):
    """A runtime with its bridge; ``open(agent_id, topics)`` registers and opens a raw gRPC stream."""
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, stream_queue=4, resume_timeout=30)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        stub = bridge_pb2_grpc.BridgeStub(channel)

        async def open_stream(agent_id: str, topics=(), ready: bool = True) -> Stream:
            await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id=agent_id, subscribed_topics=topics))
            s = Stream(stub, agent_id)
            if ready:  # (a pong comes after what was kept for the agent: ready() would skip that)
                await s.ready()
            return s

        yield rt, server, open_stream
        await channel.close()


async def parked(server, agent_id: str, stream: Stream) -> None:
    """The stream dies as a network fault would (no goodbye): the session waits for the agent."""
    stream.call.cancel()
    await until(lambda: server.by_agent[agent_id].stream is None, timeout=5)


@pytest.mark.parametrize("kind", ["local", "grpc"])
async def test_an_oversized_event_is_counted_the_agent_is_told_and_nothing_else_is_lost(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("LOOM_BRIDGE_LOCAL", "1" if kind == "local" else "0")
    seen: list[tuple[str, str, dict]] = []
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        agent = await Agent(
            "bulky",
            topics=["big.*"],
            on_event=lambda ctx, topic, event: seen.append((topic, event.type, dict(event.metadata))),
            address=f"127.0.0.1:{server.port}",
        ).start()
        try:
            assert agent._transport.stream_kind == kind
            huge = loom.Event("blob", b"x" * BIG)
            assert await rt.bus.publish("big.one", huge) == 1
            await asyncio.sleep(0.5)
            await rt.bus.publish("big.two", loom.Event("note", b"small"))
            await until(lambda: len(seen) == 2, timeout=5)
            (topic, kind_, md), after = seen
            assert (topic, kind_, md["reason"], md["event_id"]) == ("big.one", "bridge.dropped", "too_large", huge.id)
            assert int(md["size"]) > int(md["limit"]) == 4 * 1024 * 1024 and md["event_type"] == "blob"
            assert after[:2] == ("big.two", "note")  # the next event arrived: nothing else was lost
            assert agent._transport.reconnects == 0  # and the stream stayed up
            assert server.by_agent["bulky"].describe()["dropped"] == {"too_large": 1}
            assert rt.bus.stats("big.one").dropped == {"too_large": 1}
        finally:
            await agent.stop()


async def test_a_raw_client_gets_an_err_naming_the_oversized_event_and_its_stream_goes_on(hub):
    rt, _, open_stream = hub
    s = await open_stream("plain", ["big"])
    await rt.bus.publish("big", loom.Event("blob", b"x" * BIG))
    await rt.bus.publish("big", loom.Event("note", b"after"))
    err = (await s.next("err")).err
    assert err.code == "TOO_LARGE" and err.details["topic"] == "big" and err.details["limit"] == str(4 * 1024 * 1024)
    assert (await s.next("delivery")).delivery.event.payload == b"after"
    s.close()


async def test_events_for_a_reconnecting_agent_are_kept_and_delivered_when_it_returns(hub):
    rt, server, open_stream = hub
    first = await open_stream("nomad", ["news"])
    await parked(server, "nomad", first)
    assert rt.directory.get("nomad").status == "disconnected"
    for i in range(3):
        assert await rt.bus.publish("news", loom.Event("n", str(i).encode())) == 1  # kept for it
    again = await open_stream("nomad", ["news"], ready=False)
    got = [(await again.next("delivery")).delivery.event.payload for _ in range(3)]
    assert got == [b"0", b"1", b"2"] and rt.directory.get("nomad").status == "active"
    assert server.by_agent["nomad"].describe()["dropped"] == {}
    again.close()


async def test_beyond_what_is_kept_events_are_counted_and_publishers_never_wait(hub):
    rt, server, open_stream = hub  # stream_queue=4: a few events are kept
    first = await open_stream("nomad", ["news"])
    await parked(server, "nomad", first)
    for i in range(30):
        await rt.bus.publish("news", loom.Event("n", str(i).encode()), timeout=1)  # never BackpressureTimeout
    dropped = server.by_agent["nomad"].describe()["dropped"].get("disconnected", 0)
    assert 0 < dropped < 30
    again = await open_stream("nomad", ["news"], ready=False)
    got = [int((await again.next("delivery")).delivery.event.payload) for _ in range(30 - dropped)]
    assert got == sorted(got) and got[0] == 0  # the oldest were kept, in order
    assert rt.bus.stats("news").dropped == {"disconnected": dropped}  # the rest counted on their topic
    await rt.bus.publish("news", loom.Event("n", b"live"))  # back to normal: publishers wait again if needed
    assert (await again.next("delivery")).delivery.event.payload == b"live"
    again.close()


async def test_the_events_of_an_agent_that_does_not_come_back_are_counted(hub):
    rt, server, open_stream = hub
    server.resume_timeout = 0.3
    first = await open_stream("gone", ["news"])
    await parked(server, "gone", first)
    for i in range(3):
        await rt.bus.publish("news", loom.Event("n", str(i).encode()))
    await until(lambda: "gone" not in server.by_agent, timeout=3)
    assert rt.bus.stats("news").dropped == {"disconnected": 3}
    assert await rt.bus.publish("news", loom.Event("n", b"later")) == 0  # nobody is waited for any more


async def test_an_agent_that_says_goodbye_is_not_waited_for(hub):
    rt, server, _ = hub
    agent = await Agent("polite", topics=["news"], address=f"127.0.0.1:{server.port}").start()
    assert "polite" in server.by_agent
    await agent.stop()
    await until(lambda: "polite" not in server.by_agent, timeout=3)
    assert await rt.bus.publish("news", loom.Event("n", b"x")) == 0


async def test_an_sdk_agent_whose_stream_breaks_gets_what_was_published_meanwhile(hub):
    rt, server, _ = hub
    seen: list[bytes] = []
    agent = await Agent(
        "sturdy", topics=["news"], on_event=lambda ctx, t, e: seen.append(e.payload), address=f"127.0.0.1:{server.port}"
    ).start()
    try:
        agent._transport._stream.cancel()  # the connection breaks under the agent
        await until(lambda: server.by_agent["sturdy"].stream is None, timeout=5)
        for i in range(3):
            await rt.bus.publish("news", loom.Event("n", str(i).encode()))
        await until(lambda: len(seen) == 3, timeout=10)  # after the agent's reconnect backoff
        assert seen == [b"0", b"1", b"2"] and agent._transport.reconnects == 1
        assert server.by_agent["sturdy"].describe()["dropped"] == {}
    finally:
        await agent.stop()


@pytest.mark.parametrize("kind", ["local", "grpc"])
async def test_plain_emits_of_a_bridged_agent_leave_in_batches(tmp_path, monkeypatch, kind):
    """Only conversation messages (requests, replies) are written one by one on an idle stream;
    a burst of emits queues and leaves batched (one write each cost gRPC 4x its throughput)."""
    monkeypatch.setenv("LOOM_BRIDGE_LOCAL", "1" if kind == "local" else "0")
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        got = rt.bus.subscribe("burst", maxsize=1000)
        agent = await Agent("chatty", address=f"127.0.0.1:{server.port}").start()
        try:
            before = server.by_agent["chatty"].received
            for i in range(300):
                await agent.emit("burst", str(i).encode())
            await until(lambda: got.qsize() == 300, timeout=10)
            assert server.by_agent["chatty"].received - before < 100  # stream messages, not events
        finally:
            await agent.stop()


@pytest.mark.parametrize("kind", ["local", "grpc"])
async def test_a_busy_agent_still_gets_its_control_messages_and_keeps_its_session(tmp_path, monkeypatch, kind):
    """A full queue toward a busy agent is backpressure, not a stall: an err, a pong or an
    ActionCall for it goes ahead of the deliveries and nothing is cut or dropped."""
    monkeypatch.setenv("LOOM_BRIDGE_LOCAL", "1" if kind == "local" else "0")
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, stream_queue=8, stall_timeout=30)
        gate, handled, outcome = asyncio.Event(), [], []

        async def handler(ctx, topic, event):
            if event.type == "ask":
                await gate.wait()  # busy: a backlog builds up behind this event
                try:
                    await ctx.request(None, "nobody.home", b"?", timeout_ms=5000)
                except loom.NoSubscribers:
                    outcome.append("no subscribers")
                return
            handled.append(event.payload)

        agent = await Agent(
            "busy", topics=["work"], on_event=handler, mailbox_size=2, address=f"127.0.0.1:{server.port}"
        ).start()
        try:
            await rt.bus.publish("work", loom.Event("ask", b""))
            flood = asyncio.gather(*(rt.bus.publish("work", loom.Event("n", b"x" * 20_000)) for _ in range(100)))
            await asyncio.sleep(0.3)  # a backlog builds (the hub-side case of a full queue: test_bridge_accounting)
            session = server.by_agent["busy"]
            gate.set()
            await until(lambda: outcome, timeout=5)
            assert outcome == ["no subscribers"]  # the err came through at once, not a 5 s timeout
            await asyncio.wait_for(flood, 10)
            await until(lambda: len(handled) == 100, timeout=10)
            assert server.by_agent["busy"] is session and session.describe()["dropped"] == {}
            assert agent._transport.reconnects == 0
        finally:
            await agent.stop()
