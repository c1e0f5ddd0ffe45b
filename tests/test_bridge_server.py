"""The Bridge gRPC server, driven by raw loom.v1 stubs the way upstream clients use it.

Covers upstream's bridge and loom-py integration scenarios (reference §9.4) and the faults
the issue names: garbage bytes, oversized messages, a stream without Ack, an unknown
capability, a client killed mid-call, tokens, non-loopback binds, clean shutdown.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

import loom
from loom import Loom, UsageError
from loom.bridge._grpc import grpc
from loom.bridge._pb.loom.v1 import action_pb2, bridge_pb2, bridge_pb2_grpc, event_pb2


@pytest.fixture
async def bridged(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        yield rt, server, bridge_pb2_grpc.BridgeStub(channel)
        await channel.close()


class Stream:
    """An EventStream with the Ack queued before anything is awaited (as loom-py does)."""

    def __init__(self, stub, agent_id: str, metadata=None):
        self.out: asyncio.Queue = asyncio.Queue()
        self.out.put_nowait(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=agent_id)))
        self.call = stub.EventStream(self._gen(), metadata=metadata)

    async def _gen(self):
        while True:
            msg = await self.out.get()
            if msg is None:
                return
            yield msg

    def send(self, **kw):
        self.out.put_nowait(bridge_pb2.ClientEvent(**kw))

    async def next(self, kind: str | None = None, timeout: float = 3.0):
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.call.read()
                if kind is None or msg.WhichOneof("msg") == kind:
                    return msg

    async def ready(self) -> None:
        """Until the server has taken the Ack (the stream's subscriptions exist): a ping's pong."""
        self.send(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1))
        await self.next("pong")

    def close(self):
        self.out.put_nowait(None)


def ev(id_: str, type_: str, payload: bytes, **md) -> event_pb2.Event:
    return event_pb2.Event(id=id_, type=type_, payload=payload, metadata=md, timestamp_ms=1, confidence=1.0)


# -- upstream scenarios --------------------------------------------------------------------


async def test_heartbeat_echoes_the_timestamp(bridged):
    _, _, stub = bridged
    for ts in (12345, 0):
        r = await stub.Heartbeat(bridge_pb2.HeartbeatRequest(timestamp_ms=ts))
        assert (r.status, r.timestamp_ms) == ("ok", ts)


async def test_register_agent_validates_and_registers_in_the_directory(bridged):
    rt, _, stub = bridged
    r = await stub.RegisterAgent(
        bridge_pb2.AgentRegisterRequest(
            agent_id="test_agent_1", subscribed_topics=["test.topic"], metadata={"test": "true"}
        )
    )
    assert r.success and rt.directory.get("test_agent_1").location == "remote"
    empty = await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id=""))
    assert not empty.success and "agent_id" in empty.error_message
    bad = await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id="x", subscribed_topics=["a..b"]))
    assert not bad.success and "empty" in bad.error_message


async def test_publish_and_receive_includes_the_agents_own_echo(bridged):
    _, _, stub = bridged
    await stub.RegisterAgent(
        bridge_pb2.AgentRegisterRequest(agent_id="test_agent_2", subscribed_topics=["test.roundtrip"])
    )
    s = Stream(stub, "test_agent_2")
    await s.ready()
    s.send(
        publish=bridge_pb2.Publish(
            topic="test.roundtrip", event=ev("test_event_1", "test.message", b"hello from python")
        )
    )
    d = (await s.next("delivery")).delivery
    assert (d.topic, d.event.id, d.event.type, d.event.payload) == (
        "test.roundtrip",
        "test_event_1",
        "test.message",
        b"hello from python",
    )
    s.close()


async def test_deliveries_carry_the_subscribed_pattern_and_reach_many_streams(bridged):
    rt, _, stub = bridged
    for name, topics in (("a", ["market.price.*"]), ("b", ["market.price.*", "market.>"])):
        await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id=name, subscribed_topics=topics))
    sa, sb = Stream(stub, "a"), Stream(stub, "b")
    await sa.ready()
    await sb.ready()
    assert await rt.bus.publish("market.price.BTC", loom.Event("tick", b"1")) == 2  # one subscription per agent
    assert (await sa.next("delivery")).delivery.topic == "market.price.*"
    got = {(await sb.next("delivery")).delivery.topic for _ in range(2)}
    assert got == {"market.price.*", "market.>"}  # on the wire one per subscribed pattern, as upstream
    sa.close()
    sb.close()


async def test_a_client_that_asks_for_it_gets_each_event_once_with_its_concrete_topic(bridged):
    rt, server, stub = bridged
    reply = await stub.RegisterAgent(
        bridge_pb2.AgentRegisterRequest(
            agent_id="once", subscribed_topics=["market.price.*", "market.>"], metadata={"deliver": "once"}
        )
    )
    assert reply.features["deliver_once"] == "1"
    s = Stream(stub, "once")
    await s.ready()
    await rt.bus.publish("market.price.BTC", loom.Event("tick", b"1"))
    await rt.bus.publish("market.volume", loom.Event("vol", b"2"))
    first, second = (await s.next("delivery")).delivery, (await s.next("delivery")).delivery
    assert (first.topic, first.event.payload) == ("market.price.BTC", b"1")
    assert (second.topic, second.event.payload) == ("market.volume", b"2")
    s.close()


async def test_inline_ping_gets_a_pong(bridged):
    _, _, stub = bridged
    s = Stream(stub, "pinger")
    s.send(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=5))
    pong = (await s.next("pong")).pong
    assert pong.status == "ok" and pong.timestamp_ms > 5
    s.close()


async def test_forward_action_reaches_the_tool_registry(bridged):
    rt, _, stub = bridged

    @loom.tool("test.echo")
    def echo(text: str) -> str:
        return text

    rt.tools.register(echo)
    ok = await stub.ForwardAction(
        action_pb2.ActionCall(id="call_1", capability="test.echo", payload=b'{"text": "hello"}')
    )
    assert (ok.id, ok.status, json.loads(ok.output)) == ("call_1", action_pb2.ACTION_OK, "hello")
    missing = await stub.ForwardAction(action_pb2.ActionCall(id="call_2", capability="nope", payload=b"{}"))
    assert (missing.id, missing.status, missing.error.code) == ("call_2", action_pb2.ACTION_ERROR, "NOT_FOUND")
    bad = await stub.ForwardAction(action_pb2.ActionCall(id="call_3", capability="test.echo", payload=b"{not json"))
    assert bad.error.code == "INVALID_PARAMS"
    args = await stub.ForwardAction(action_pb2.ActionCall(id="call_4", capability="test.echo", payload=b'{"txt": 1}'))
    assert args.error.code == "INVALID_PARAMS"


async def test_a_remote_capability_is_a_callable_tool(bridged):
    rt, _, stub = bridged
    desc = action_pb2.CapabilityDescriptor(
        name="test.add",
        version="1.0",
        provider=action_pb2.PROVIDER_GRPC,
        metadata={"input_schema": json.dumps({"type": "object", "required": ["a", "b"]})},
    )
    await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id="adder", capabilities=[desc]))
    assert rt.tools.describe("test.add")["provider"] == "remote"
    offline = await rt.tools.invoke("test.add", {"a": 1, "b": 2})
    assert offline.error.code == "PROVIDER_UNAVAILABLE"
    s = Stream(stub, "adder")
    await s.ready()

    async def answer():
        call = (await s.next("action_call")).action_call
        args = json.loads(call.payload)
        s.send(
            action_result=action_pb2.ActionResult(
                id=call.id, status=action_pb2.ACTION_OK, output=json.dumps(args["a"] + args["b"]).encode()
            )
        )

    answering = asyncio.create_task(answer())
    r = await rt.tools.invoke("test.add", {"a": 5, "b": 3}, timeout=3)
    await answering
    assert r.ok and r.output == 8
    assert (await rt.tools.invoke("test.add", {"a": 1})).error.code == "INVALID_PARAMS"  # the declared schema
    fwd = await stub.ForwardAction(
        action_pb2.ActionCall(id="call_1", capability="test.add", payload=b'{"a": 5, "b": 3}', timeout_ms=300)
    )
    assert fwd.id == "call_1" and fwd.status == action_pb2.ACTION_TIMEOUT  # nobody answers this one
    s.close()


# -- faults --------------------------------------------------------------------------------


async def test_a_stream_must_start_with_an_ack(bridged):
    _, _, stub = bridged

    async def wrong_first():
        yield bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1))

    call = stub.EventStream(wrong_first())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "Ack" in info.value.details()

    async def nothing():
        return
        yield  # pragma: no cover

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.EventStream(nothing()).read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no first message" in info.value.details()


async def test_a_client_killed_mid_call_gives_provider_unavailable_at_once(bridged):
    rt, _, stub = bridged
    await stub.RegisterAgent(
        bridge_pb2.AgentRegisterRequest(
            agent_id="flaky", capabilities=[action_pb2.CapabilityDescriptor(name="flaky.work", version="1.0")]
        )
    )
    s = Stream(stub, "flaky")
    await s.ready()
    invocation = asyncio.create_task(rt.tools.invoke("flaky.work", {}, timeout=30))
    await s.next("action_call")
    s.call.cancel()  # the client dies with the call in flight
    r = await asyncio.wait_for(invocation, 5)
    assert r.error.code == "PROVIDER_UNAVAILABLE"
    assert rt.directory.get("flaky").status == "disconnected"


async def test_a_reconnect_never_loses_the_new_streams_subscriptions(bridged):
    rt, _, stub = bridged
    await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id="re", subscribed_topics=["news"]))
    old = Stream(stub, "re")
    await old.ready()
    new = Stream(stub, "re")
    await new.ready()
    old.call.cancel()  # the old stream ends after the new one started
    await asyncio.sleep(0.2)
    await rt.bus.publish("news", loom.Event("n", b"still here"))
    assert (await new.next("delivery")).delivery.event.payload == b"still here"
    new.close()


async def test_invalid_publishes_get_an_error_message_and_the_stream_goes_on(bridged):
    _, _, stub = bridged
    await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id="bad", subscribed_topics=["ok.topic"]))
    s = Stream(stub, "bad")
    await s.ready()
    s.send(publish=bridge_pb2.Publish(topic="bad..topic", event=ev("e", "t", b"")))
    err = (await s.next("err")).err
    assert err.code == "INVALID_ARGUMENT" and "empty" in err.message
    s.send(publish=bridge_pb2.Publish(topic="ok.topic", event=ev("e2", "t", b"fine")))
    assert (await s.next("delivery")).delivery.event.payload == b"fine"
    s.close()


async def test_oversized_messages_are_refused_and_the_server_keeps_serving(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, max_message_bytes=64 * 1024)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = bridge_pb2_grpc.BridgeStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ForwardAction(action_pb2.ActionCall(id="big", capability="x", payload=b"x" * 200_000))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await stub.Heartbeat(bridge_pb2.HeartbeatRequest(timestamp_ms=1))).status == "ok"


async def test_garbage_bytes_on_the_port_do_not_stop_the_server(bridged):
    _, server, stub = bridged
    for junk in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\xff" * 500,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xde\xad" * 64,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(junk)
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(1024), 2)
        except TimeoutError:
            pass
        writer.close()
    assert (await stub.Heartbeat(bridge_pb2.HeartbeatRequest(timestamp_ms=7))).timestamp_ms == 7


async def test_a_stalled_client_is_cut_off_instead_of_growing_memory(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, stream_queue=16, stall_timeout=0.5)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = bridge_pb2_grpc.BridgeStub(ch)
            await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id="sloth", subscribed_topics=["flood"]))
            s = Stream(stub, "sloth")  # never reads
            await s.ready()
            big = loom.Event("blob", b"x" * 50_000)
            for _ in range(400):
                await rt.bus.publish("flood", big, timeout=5)
            async with asyncio.timeout(5):
                while "sloth" in server.by_agent:  # noqa: ASYNC110 - waits for the stall detector
                    await asyncio.sleep(0.05)
            assert await rt.bus.publish("flood", big) == 0  # its subscription is gone: publishers are free
            s.call.cancel()


async def test_tokens_are_required_when_configured(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, token="s3cret")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = bridge_pb2_grpc.BridgeStub(ch)
            for metadata in (None, (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Heartbeat(bridge_pb2.HeartbeatRequest(), metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = await stub.Heartbeat(
                bridge_pb2.HeartbeatRequest(timestamp_ms=3), metadata=(("authorization", "Bearer s3cret"),)
            )
            assert ok.timestamp_ms == 3
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await Stream(stub, "intruder").next()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_non_loopback_binds_need_a_token_and_stop_releases_the_port(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        with pytest.raises(UsageError, match="without a token"):
            await rt.start_bridge("0.0.0.0", 0)
        server = await rt.start_bridge(port=0)
        port = server.port
        with pytest.raises(UsageError, match="already serves"):
            await rt.start_bridge(port=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again after rt.stop()


def test_wire_field_numbers_match_upstream_v1():
    def fields(msg):
        return {f.name: f.number for f in msg.DESCRIPTOR.fields}

    assert fields(bridge_pb2.AgentRegisterRequest) == {
        "agent_id": 1,
        "subscribed_topics": 2,
        "capabilities": 3,
        "metadata": 4,
    }
    assert {k: v for k, v in fields(bridge_pb2.ClientEvent).items() if v <= 4} == {
        "publish": 1,
        "ack": 2,
        "ping": 3,
        "action_result": 4,
    }
    assert {k: v for k, v in fields(bridge_pb2.ServerEvent).items() if v <= 4} == {
        "delivery": 1,
        "pong": 2,
        "err": 3,
        "action_call": 4,
    }
    assert fields(action_pb2.ActionCall) == {
        "id": 1,
        "capability": 2,
        "version": 3,
        "payload": 4,
        "headers": 5,
        "timeout_ms": 6,
        "correlation_id": 7,
        "qos": 8,
    }
    assert fields(action_pb2.ActionResult) == {"id": 1, "status": 2, "output": 3, "error": 4}
    assert fields(action_pb2.CapabilityDescriptor) == {"name": 1, "version": 2, "provider": 3, "metadata": 4}
    assert fields(bridge_pb2.HeartbeatResponse) == {"timestamp_ms": 1, "status": 2}
    assert [m.name for m in bridge_pb2.DESCRIPTOR.services_by_name["Bridge"].methods] == [
        "RegisterAgent",
        "EventStream",
        "ForwardAction",
        "Heartbeat",
    ]
    assert bridge_pb2.DESCRIPTOR.package == "loom.v1" and action_pb2.ActionStatus.Value("ACTION_TIMEOUT") == 2
