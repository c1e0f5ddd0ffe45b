"""Every event for a bridged agent is written or counted, also in the races of streams that stall,
break or are replaced: the hub's real Session/Connection driven through accept_stream/run_stream
with a scripted client (its write function and its message iterator are run_stream's only seams),
the writers' two-lane Outbox, and the SDK client's writer."""

from __future__ import annotations

import asyncio

from loom import Event, Loom
from loom.bridge._pb.loom.v1 import bridge_pb2
from loom.bridge.batching import StreamWriter
from loom.bridge.client import BridgeTransport
from loom.bridge.outbox import EMPTY, Outbox
from tests.conftest import until


class ScriptedClient:
    """A client stream: ``block.clear()`` makes the hub's writes hang (it stops reading),
    ``fail`` makes them raise (the connection broke)."""

    def __init__(self, agent_id: str) -> None:
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.inbox.put_nowait(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=agent_id)))
        self.attempted: list = []
        self.written: list = []
        self.block = asyncio.Event()
        self.block.set()
        self.fail = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        msg = await self.inbox.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def write(self, msg) -> None:
        self.attempted.append(msg)
        await self.block.wait()
        if self.fail:
            raise ConnectionError("broken")
        self.written.append(msg)

    @staticmethod
    def payloads(msgs) -> list[bytes]:
        out = []
        for m in msgs:
            kind = m.WhichOneof("msg")
            items = [m.delivery] if kind == "delivery" else m.delivery_batch.items if kind == "delivery_batch" else []
            out += [d.event.payload for d in items]
        return out


async def open_scripted(server, client: ScriptedClient):
    conn = await server.accept_stream(client, "scripted")
    return conn, asyncio.create_task(server.run_stream(conn, client, client.write))


def register(server, agent_id: str, topics) -> None:
    md = {"deliver": "once", "batch": "1"}
    ok, err = server.register(bridge_pb2.AgentRegisterRequest(agent_id=agent_id, subscribed_topics=topics, metadata=md))
    assert ok, err


async def test_events_for_a_client_that_stalls_are_all_written_or_counted(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, stream_queue=4, stall_timeout=0.3, local_stream=False)
        register(server, "sloth", ["t"])
        client = ScriptedClient("sloth")
        conn, task = await open_scripted(server, client)
        client.block.clear()  # it stops reading: the write under way hangs
        await asyncio.gather(*(rt.bus.publish("t", Event("n", str(i).encode())) for i in range(30)))
        await until(lambda: "sloth" not in server.by_agent, timeout=5)
        assert conn.close_code == "RESOURCE_EXHAUSTED"
        written = len(ScriptedClient.payloads(client.written))
        assert written + sum(rt.bus.stats("t").dropped.values()) == 30  # the forwarder's, the queue's,
        client.block.set()  # the hung write's, and the waiting publishers' events all counted
        client.inbox.put_nowait(None)
        await asyncio.gather(task, return_exceptions=True)


async def test_a_full_queue_toward_an_agent_still_takes_control_messages_first(tmp_path):
    """A full queue is backpressure, not a stall: a pong, an err or an ActionCall goes ahead of the
    deliveries and the stream stays up (it used to be closed for stalling at once)."""
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, stream_queue=4, stall_timeout=30, local_stream=False)
        register(server, "busy", ["t"])
        client = ScriptedClient("busy")
        conn, task = await open_scripted(server, client)
        client.block.clear()  # the client is slow to read
        publishers = asyncio.gather(*(rt.bus.publish("t", Event("n", str(i).encode())) for i in range(12)))
        session = server.by_agent["busy"]
        await until(lambda: session.outbound.full())
        assert conn.send(bridge_pb2.ServerEvent(pong=bridge_pb2.HeartbeatResponse(status="ok")))
        assert not conn.closed.is_set()
        client.block.set()
        await asyncio.wait_for(publishers, 5)
        await until(lambda: len(ScriptedClient.payloads(client.written)) == 12)
        kinds = [m.WhichOneof("msg") for m in client.written]
        assert kinds.index("pong") <= 1  # right after the write that was hanging, ahead of the backlog
        assert ScriptedClient.payloads(client.written) == [str(i).encode() for i in range(12)]
        assert rt.bus.stats("t").dropped == {} and server.by_agent["busy"] is session
        client.inbox.put_nowait(None)
        await asyncio.gather(task, return_exceptions=True)


async def test_what_a_replaced_streams_writer_took_goes_to_the_new_stream(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, max_message_bytes=4096, local_stream=False)
        register(server, "nomad", ["t"])
        old = ScriptedClient("nomad")
        _, old_task = await open_scripted(server, old)
        old.block.clear()  # a half-dead connection: the write under way hangs
        for i in range(4):  # 2 KB each: no two fit one batch
            await rt.bus.publish("t", Event("n", str(i).encode() + b"." * 2000))
        await until(lambda: len(old.attempted) == 1)
        new = ScriptedClient("nomad")
        _, new_task = await open_scripted(server, new)  # the agent reconnects
        old.fail = True
        old.block.set()  # the old write finally fails
        await until(lambda: len(ScriptedClient.payloads(new.written)) == 3)
        got = [p[:1] for p in ScriptedClient.payloads(new.written)]
        assert got == [b"1", b"2", b"3"]  # in order; none taken by the old writer and lost
        assert rt.bus.stats("t").dropped == {"disconnected": 1}  # the one in the failed write is counted
        for client in (old, new):
            client.inbox.put_nowait(None)
        await asyncio.gather(old_task, new_task, return_exceptions=True)


async def test_the_outbox_keeps_control_messages_ahead_of_and_outside_the_data_bound():
    box = Outbox(bridge_pb2.Delivery, maxsize=2, control_cap=2)
    box.put_nowait(bridge_pb2.Delivery(topic="a"))
    box.put_nowait(bridge_pb2.Delivery(topic="b"))
    assert box.full() and box.put_control("pong") and box.put_control("err")
    assert not box.put_control("one too many")  # a peer that reads nothing at all
    assert [box.get_nowait() for _ in range(3)][:2] == ["pong", "err"]
    box.requeue(["err", bridge_pb2.Delivery(topic="a")])  # a writer puts back what it took, in order
    assert box.peek() == "err"
    assert [box.get_nowait() for _ in range(3)] == [
        "err",
        bridge_pb2.Delivery(topic="a"),
        bridge_pb2.Delivery(topic="b"),
    ]
    assert box.peek() is EMPTY and box.empty()


async def test_a_writer_puts_back_what_it_took_when_its_stream_stops_being_current():
    box = Outbox(bridge_pb2.Publish, maxsize=10)
    current = {"stream": 1}
    wrote: list = []
    gate = asyncio.Event()

    async def write(msg):
        await gate.wait()
        wrote.append(msg)

    def batch(items):
        return ("batch", len(items))

    writer = StreamWriter(
        box, write, end=None, one=lambda p: p, many=batch, max_bytes=1 << 20, stop=lambda: current["stream"] != 1
    )
    task = asyncio.create_task(writer.run())
    box.put_nowait(bridge_pb2.Publish(topic="first"))
    await asyncio.sleep(0)
    for name in ("second", "third"):
        box.put_nowait(bridge_pb2.Publish(topic=name))
    current["stream"] = 2  # replaced while "first" is being written
    gate.set()
    await asyncio.wait_for(task, 1)
    assert [m.topic for m in wrote] == ["first"]
    assert [box.get_nowait().topic for _ in range(2)] == ["second", "third"]  # left for the next writer


async def test_the_sdk_writer_puts_back_a_publish_it_took_when_the_stream_breaks():
    """A direct send holds the write lock; the writer took the next publish and waits for the lock;
    the stream breaks: the publish waits for the next stream instead of vanishing."""

    class Call:
        def __init__(self) -> None:
            self.gate = asyncio.Event()
            self.broken = False

        async def write(self, msg):
            await self.gate.wait()
            if self.broken:
                raise ConnectionError("reset")

        async def done_writing(self) -> None:
            pass

        def cancel(self) -> None:
            pass

    transport = BridgeTransport("127.0.0.1:1")
    call = transport._stream = Call()
    transport.connected.set()
    writer = asyncio.create_task(transport._write(call, True))
    await asyncio.sleep(0)
    direct = asyncio.create_task(transport.send("svc.x", Event("collab.reply", b"reply")))
    await asyncio.sleep(0.01)  # the reply is being written directly: the lock is held
    transport.publish_nowait("news", Event("n", b"plain emit"))
    await asyncio.sleep(0.01)  # the writer took it and waits for the lock
    call.broken = True
    transport._stream = None  # what the reader does when the stream ends
    call.gate.set()
    await asyncio.gather(writer, direct, return_exceptions=True)
    waiting = sorted(m.event.payload for m in transport._outbound.drain())
    assert waiting == [b"plain emit", b"reply"] and transport.dropped == {}


async def test_the_sdk_never_raises_inside_its_bus_when_its_control_lane_is_full():
    transport = BridgeTransport("127.0.0.1:1")
    transport._stub = object()  # registered: pattern changes are sent to the hub
    transport._outbound.control_cap = 1
    first = transport.bus.subscribe("barrier.x")
    second = transport.bus.subscribe("barrier.y")  # the hub is not reading: counted, not raised
    assert transport.dropped == {"control_full": 1}
    first.close()
    second.close()
    assert transport.bus.subscriptions() == [] and first.closed and second.closed
    await transport.bus.aclose()
