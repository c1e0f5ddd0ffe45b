"""The bridge's same-host stream (loom.bridge.local), driven over raw sockets, and the SDK's choice
between it and gRPC. The faults are the ones the gRPC stream has: garbage, a wrong token, no hello,
no Ack, oversized and unparsable frames, a stalled reader, a client killed mid-call."""

from __future__ import annotations

import asyncio
import struct

import pytest

import loom
from loom import Agent, Loom
from loom.bridge._pb.loom.v1 import action_pb2, bridge_pb2, event_pb2
from loom.bridge.framing import PREFACE, FrameError, FrameStream
from loom.bridge.local import LocalStreamServer, is_loopback, open_local_stream
from tests.conftest import until


@pytest.fixture
async def local(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        yield rt, server


async def raw(server, agent_id: str | None = None, token: str = "") -> FrameStream:
    """A same-host stream opened by hand; with ``agent_id`` the Ack is sent and a pong awaited."""
    stream = await open_local_stream(server.features, token, 4 << 20, 5)
    if agent_id is not None:
        await stream.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=agent_id)))
        await stream.write(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1)))
        assert (await next_of(stream, "pong")).pong.status == "ok"
    return stream


async def next_of(stream: FrameStream, kind: str | None = None, timeout: float = 3.0):
    async with asyncio.timeout(timeout):
        while True:
            msg = await stream.read()
            if msg is None or kind is None or msg.WhichOneof("msg") == kind:
                return msg


async def last_words(reader: asyncio.StreamReader, timeout: float = 3.0, greeted: bool = True) -> list:
    """Every ServerEvent until the server closes the connection (after its greeting, a StreamHello
    with its server_id, which a right preface gets)."""
    out = []
    async with asyncio.timeout(timeout):
        while head := await reader.read(4):
            (size,) = struct.unpack(">I", head)
            msg = bridge_pb2.StreamHello() if greeted and not out else bridge_pb2.ServerEvent()
            msg.ParseFromString(await reader.readexactly(size))
            out.append(msg)
    if greeted:
        assert out and out[0].server_id, "no greeting"
        return out[1:]
    return out


def frame(msg) -> bytes:
    data = msg.SerializeToString()
    return struct.pack(">I", len(data)) + data


async def connect(server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.local.port)


async def still_serves(server) -> None:
    s = await raw(server, "witness")
    await s.aclose()


# -- the protocol --------------------------------------------------------------------------


async def test_the_bridge_advertises_its_same_host_stream_and_serves_events_both_ways(local):
    rt, server = local
    assert server.features["local_stream"] == f"127.0.0.1:{server.local.port}"
    assert server.describe()["local_stream"] == server.local.address
    server.register(bridge_pb2.AgentRegisterRequest(agent_id="lo", subscribed_topics=["lo.in"]))
    s = await raw(server, "lo")
    assert server.describe()["connections"][0]["peer"].startswith("local:127.0.0.1:")
    await rt.bus.publish("lo.in", loom.Event("note", b"to the agent"))
    d = (await next_of(s, "delivery")).delivery
    assert (d.topic, d.event.payload) == ("lo.in", b"to the agent")
    got = rt.bus.subscribe("lo.out")
    event = event_pb2.Event(id="e1", type="note", payload=b"from the agent", timestamp_ms=1, confidence=1.0)
    await s.write(bridge_pb2.ClientEvent(publish=bridge_pb2.Publish(topic="lo.out", event=event)))
    assert (await asyncio.wait_for(got.get(), 3)).event.payload == b"from the agent"
    await s.done_writing()  # a clean end: the server closes its side and the agent is disconnected
    assert await next_of(s) is None
    await until(lambda: rt.directory.get("lo").status == "disconnected")
    await s.aclose()


async def test_a_remote_capability_over_the_same_host_stream_and_a_client_killed_mid_call(local):
    rt, server = local
    cap = action_pb2.CapabilityDescriptor(name="lo.work", version="1.0")
    server.register(bridge_pb2.AgentRegisterRequest(agent_id="worker", capabilities=[cap]))
    s = await raw(server, "worker")
    call = asyncio.create_task(rt.tools.invoke("lo.work", {"n": 2}, timeout=10))
    ac = (await next_of(s, "action_call")).action_call
    await s.write(bridge_pb2.ClientEvent(action_result=action_pb2.ActionResult(id=ac.id, output=b"4")))
    assert (await call).output == 4
    call = asyncio.create_task(rt.tools.invoke("lo.work", {}, timeout=30))
    await next_of(s, "action_call")
    s.cancel()  # the client dies with the call in flight
    assert (await asyncio.wait_for(call, 5)).error.code == "PROVIDER_UNAVAILABLE"


async def test_direct_writes_keep_order_and_a_burst_still_goes_out_batched(local):
    rt, server = local
    server.register(
        bridge_pb2.AgentRegisterRequest(agent_id="fan", subscribed_topics=["burst"], metadata={"batch": "1"})
    )
    s = await raw(server, "fan")
    session = server.by_agent["fan"]
    for round_ in range(3):
        for i in range(50):  # one loop turn: the first is written directly, the rest queue and batch
            await rt.bus.publish("burst", loom.Event("n", f"{round_}:{i}".encode()))
        kinds, payloads = [], []
        while len(payloads) < 50:
            msg = await next_of(s)
            kinds.append(msg.WhichOneof("msg"))
            items = msg.delivery_batch.items if kinds[-1] == "delivery_batch" else [msg.delivery]
            payloads += [d.event.payload.decode() for d in items]
        assert payloads == [f"{round_}:{i}" for i in range(50)]
        assert kinds[0] == "delivery" and "delivery_batch" in kinds
        await until(lambda: session.stream._idle)
    assert session.delivered == 150
    await s.aclose()


# -- faults --------------------------------------------------------------------------------


async def test_garbage_on_the_same_host_port_is_closed_silently_and_others_go_on(local):
    _, server = local
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\xff" * 500, PREFACE[:-1] + b"?" + b"\x00" * 8):
        reader, writer = await connect(server)
        writer.write(junk)
        assert await last_words(reader, greeted=False) == []  # not our protocol: nothing said, closed
        writer.close()
    await still_serves(server)


async def test_the_token_is_required_on_the_same_host_stream(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, token="s3cret")
        for token in ("", "wrong"):
            reader, writer = await connect(server)
            writer.write(PREFACE + frame(bridge_pb2.StreamHello(token=token)))
            words = await last_words(reader)
            assert [(w.err.code, w.err.message) for w in words] == [
                ("UNAUTHENTICATED", "missing or wrong bearer token")
            ]
            writer.close()
        s = await raw(server, "friend", token="s3cret")
        await s.aclose()


async def test_no_hello_or_no_ack_in_time_gets_invalid_argument(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, ack_timeout=0.3)
        reader, writer = await connect(server)
        writer.write(PREFACE)  # and then nothing
        assert [w.err.code for w in await last_words(reader)] == ["INVALID_ARGUMENT"]
        writer.close()
        for opening in (b"", frame(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1)))):
            reader, writer = await connect(server)
            writer.write(PREFACE + frame(bridge_pb2.StreamHello()) + opening)
            words = await last_words(reader)
            assert len(words) == 1 and words[0].err.code == "INVALID_ARGUMENT" and "Ack" in words[0].err.message
            writer.close()
        await still_serves(server)


async def test_oversized_and_unparsable_frames_end_that_stream_only(local):
    rt, server = local
    server.register(bridge_pb2.AgentRegisterRequest(agent_id="steady", subscribed_topics=["steady.in"]))
    steady = await raw(server, "steady")
    for bad, code in (
        (struct.pack(">I", 100 << 20), "RESOURCE_EXHAUSTED"),
        (b"\x00\x00\x00\x03\xff\xff\xff", "INVALID_ARGUMENT"),
    ):
        reader, writer = await connect(server)
        writer.write(PREFACE + frame(bridge_pb2.StreamHello()))
        writer.write(frame(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=f"bad-{code}"))) + bad)
        words = await last_words(reader)
        assert words[-1].err.code == code, words
        await until(lambda c=code: f"bad-{c}" not in server.by_agent)
        writer.close()
    hello_too_big = PREFACE + struct.pack(">I", 1 << 20)
    reader, writer = await connect(server)
    writer.write(hello_too_big)
    assert [w.err.code for w in await last_words(reader)] == ["RESOURCE_EXHAUSTED"]
    writer.close()
    await rt.bus.publish("steady.in", loom.Event("n", b"unharmed"))
    assert (await next_of(steady, "delivery")).delivery.event.payload == b"unharmed"
    await steady.aclose()


async def test_a_stalled_same_host_reader_is_cut_off(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, stream_queue=16, stall_timeout=0.5)
        server.register(bridge_pb2.AgentRegisterRequest(agent_id="sloth", subscribed_topics=["flood"]))
        sloth = await raw(server, "sloth")  # and never reads again
        big = loom.Event("blob", b"x" * 50_000)
        for _ in range(400):
            await rt.bus.publish("flood", big, timeout=5)
        await until(lambda: "sloth" not in server.by_agent, timeout=5)
        assert await rt.bus.publish("flood", big) == 0  # its subscription is gone: publishers are free
        await until(lambda: not server.local._streams, timeout=5)  # the server let go of the socket too
        ended = None
        try:
            async with asyncio.timeout(5):
                while (msg := await sloth.read()) is not None:
                    ended = msg
        except ConnectionError:
            ended = "reset"  # dropped with unread bytes in flight
        assert ended == "reset" or ended.err.code == "RESOURCE_EXHAUSTED", ended
        sloth.cancel()


async def test_a_forwarder_waiting_for_room_keeps_its_place_in_line(tmp_path):
    """An event the forwarder holds while the stream is full is not overtaken by a later one
    that finds room first (the publisher's shortcut stands back while the forwarder waits)."""
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, stream_queue=4, stall_timeout=10)
        server.register(
            bridge_pb2.AgentRegisterRequest(agent_id="queue", subscribed_topics=["line"], metadata={"batch": "1"})
        )
        client = await raw(server, "queue")
        session = server.by_agent["queue"]
        n = 0
        while not session.holding:  # fill the socket, then the stream's queue, until the forwarder waits
            await rt.bus.publish("line", loom.Event("n", str(n).encode() + b"." * 60_000))
            n += 1
            await asyncio.sleep(0)
        taken = session.outbound.get_nowait()  # room appears; the forwarder has not run yet
        await rt.bus.publish("line", loom.Event("n", str(n).encode() + b"." * 60_000))
        got = []
        while len(got) < n:  # everything but the one taken out by hand
            msg = await next_of(client, timeout=5)
            items = msg.delivery_batch.items if msg.WhichOneof("msg") == "delivery_batch" else [msg.delivery]
            got += [int(d.event.payload.split(b".")[0]) for d in items]
        assert got == sorted(got), got
        assert int(taken.event.payload.split(b".")[0]) not in got
        await client.aclose()


async def test_stop_releases_the_same_host_port(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        lo_port = server.local.port
        s = await raw(server, "leaving")
    assert await next_of(s) is None  # the stream was closed by the stop
    await s.aclose()
    with pytest.raises(ConnectionRefusedError):  # nothing listens (the closed stream may linger in TIME_WAIT)
        await asyncio.open_connection("127.0.0.1", lo_port)


async def test_frames_over_the_readers_limit_and_cut_frames_raise_frame_errors():
    got: asyncio.Queue = asyncio.Queue()

    async def serve(reader, writer):
        await got.put(FrameStream(reader, writer, bridge_pb2.ServerEvent, 64))

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
    peer = await got.get()
    with pytest.raises(FrameError, match="over the 64-byte limit"):
        await peer.write(bridge_pb2.ServerEvent(err=bridge_pb2.Error(message="x" * 100)))
    writer.write(struct.pack(">I", 1000))
    with pytest.raises(FrameError) as info:
        await peer.read()
    assert info.value.code == "RESOURCE_EXHAUSTED"
    writer.write(struct.pack(">I", 10) + b"abc")
    writer.close()
    peer2_reader, peer2_writer = await asyncio.open_connection("127.0.0.1", srv.sockets[0].getsockname()[1])
    cut = await got.get()
    peer2_writer.write(struct.pack(">I", 10) + b"abc")
    peer2_writer.close()
    with pytest.raises(FrameError, match="ended inside a frame"):
        await cut.read()
    await peer.aclose()
    await cut.aclose()
    srv.close()
    await srv.wait_closed()


def test_the_same_host_stream_is_loopback_only():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    with pytest.raises(ValueError, match="loopback only"):
        LocalStreamServer(None, "0.0.0.0")


async def test_an_advertised_address_off_this_host_is_never_dialled():
    with pytest.raises(ValueError, match="not a loopback"):
        await open_local_stream({"local_stream": "10.9.9.9:5000", "local_stream_id": "x"}, None, 1024, 1)


# -- the SDK's choice ----------------------------------------------------------------------


async def test_sdk_agents_use_the_same_host_stream_unless_told_not_to(local, monkeypatch):
    rt, server = local

    async def echo(ctx, topic, event):
        await ctx.reply(ctx.thread(event), event.payload)

    await Agent("kernel-echo", topics=["svc.k"], on_event=echo, runtime=rt).start()
    address = f"127.0.0.1:{server.port}"
    fast = await Agent("fast", address=address).start()
    monkeypatch.setenv("LOOM_BRIDGE_LOCAL", "0")
    plain = await Agent("plain", address=address).start()
    try:
        assert (fast._transport.stream_kind, plain._transport.stream_kind) == ("local", "grpc")
        peers = {c["agent"]: c["peer"] for c in server.describe()["connections"]}
        assert peers["fast"].startswith("local:") and peers["plain"].startswith("ipv4:")
        for agent in (fast, plain):
            reply = await agent.ctx.request(agent.ctx.new_thread(), "svc.k", b"hi", timeout_ms=3000)
            assert reply is not None and reply.payload == b"hi"
    finally:
        await fast.stop()
        await plain.stop()


async def test_the_sdk_falls_back_to_grpc_when_the_same_host_stream_is_unreachable(local):
    rt, server = local
    await server.local.stop()  # still advertised, nothing listens
    agent = await Agent("survivor", topics=["s.in"], address=f"127.0.0.1:{server.port}").start()
    try:
        assert agent._transport.stream_kind == "grpc"
        assert await rt.bus.publish("s.in", loom.Event("n", b"")) == 1
    finally:
        await agent.stop()


async def test_a_stranger_on_the_advertised_port_never_gets_the_token(tmp_path):
    """A port-forward or another program on the advertised port: the SDK checks the greeting
    before it says anything but the preface, and uses gRPC's stream instead (no reconnect storm)."""
    heard: list[bytes] = []

    async def silent(reader, writer):
        heard.append(await reader.read(1 << 16))
        heard[-1] += await reader.read()  # until the SDK gives up and closes
        writer.close()

    async def pretender(reader, writer):
        writer.write(frame(bridge_pb2.StreamHello(server_id="not-the-bridge")))
        heard.append(await reader.read(1 << 16))
        heard[-1] += await reader.read()
        writer.close()

    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, token="s3cret")
        for stranger in (pretender, silent):
            lurker = await asyncio.start_server(stranger, "127.0.0.1", 0)
            server.features["local_stream"] = f"127.0.0.1:{lurker.sockets[0].getsockname()[1]}"
            agent = await Agent("wary", topics=["w.in"], address=f"127.0.0.1:{server.port}", token="s3cret").start()
            try:
                assert agent._transport.stream_kind == "grpc"
                assert await rt.bus.publish("w.in", loom.Event("n", b"")) == 1
                await asyncio.sleep(0.3)
                assert agent._transport.reconnects == 0
            finally:
                await agent.stop()
                lurker.close()
                await lurker.wait_closed()
        assert heard and all(h == PREFACE for h in heard)  # the preface only: never a token


@pytest.mark.parametrize("kind", ["local", "grpc"])
async def test_bursts_bigger_than_one_message_go_out_in_several_batches(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("LOOM_BRIDGE_LOCAL", "1" if kind == "local" else "0")
    got: list[bytes] = []

    async def collect(ctx, topic, event):
        got.append(event.payload[:8])

    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        address = f"127.0.0.1:{server.port}"
        remote = await Agent("sink", topics=["down"], on_event=collect, address=address).start()
        here = rt.bus.subscribe("up", maxsize=1000)
        try:
            assert remote._transport.stream_kind == kind
            blob = b"." * 50_000  # 200 of them are 10 MB: more than one 4 MB message either way
            for i in range(200):
                await remote.emit("up", f"{i:08d}".encode() + blob)
            ups = [(await asyncio.wait_for(here.get(), 10)).event.payload[:8] for _ in range(200)]
            assert ups == [f"{i:08d}".encode() for i in range(200)]
            for i in range(200):
                await rt.bus.publish("down", loom.Event("n", f"{i:08d}".encode() + blob))
            await until(lambda: len(got) == 200, timeout=10)
            assert got == [f"{i:08d}".encode() for i in range(200)]
            assert remote._transport.reconnects == 0
            with pytest.raises(loom.LoomError, match="over the bridge's message limit"):
                await remote.emit("up", b"x" * (5 << 20))  # one event too big: refused here, stream unharmed
            await remote.emit("up", b"after")
            assert (await asyncio.wait_for(here.get(), 5)).event.payload == b"after"
        finally:
            await remote.stop()


async def test_a_reconnect_leaves_one_writer_behind(local):
    _, server = local
    agent = await Agent("phoenix", topics=["p.in"], address=f"127.0.0.1:{server.port}").start()
    try:
        for n in (1, 2, 3):
            server.by_agent["phoenix"].close("test: drop the stream")
            await until(
                lambda n=n: agent._transport.reconnects == n and agent._transport.connected.is_set(), timeout=10
            )
        writers = [t for t in asyncio.all_tasks() if t.get_name().startswith("loom.bridge.client.write:phoenix")]
        assert len(writers) == 1
    finally:
        await agent.stop()
