"""Stopping the runtime: whatever waits on it fails at once with RuntimeStopped, the parts close in
reverse order of start, and one part that fails to close never keeps the others open."""

from __future__ import annotations

import asyncio

import pytest

import loom
from loom import Agent, Loom, RuntimeStopped, StopFailed, tool
from loom.bridge._grpc import grpc
from loom.bridge._pb.loom.v1 import action_pb2, bridge_pb2, bridge_pb2_grpc


async def _fails_fast_with_runtime_stopped(rt: Loom, pending: asyncio.Task) -> None:
    await asyncio.sleep(0.1)
    assert not pending.done()
    started = asyncio.get_running_loop().time()
    await rt.stop()
    with pytest.raises(RuntimeStopped):
        await asyncio.wait_for(pending, 1)
    assert asyncio.get_running_loop().time() - started < 1.5  # not the caller's timeout


async def test_a_pending_request_fails_at_once_when_the_runtime_stops(tmp_path):
    rt = await Loom(workspace=tmp_path, native_tools=()).start()
    rt.bus.subscribe("silent")  # someone listens, nobody answers
    pending = asyncio.create_task(loom.request_reply("silent", b"?", timeout=30, runtime=rt))
    await _fails_fast_with_runtime_stopped(rt, pending)


async def test_a_pending_ctx_request_from_outside_a_handler_fails_at_once(tmp_path):
    rt = await Loom(workspace=tmp_path, native_tools=()).start()
    rt.bus.subscribe("silent")
    asker = await Agent("asker", runtime=rt).start()
    pending = asyncio.create_task(asker.ctx.request(None, "silent", b"?", timeout_ms=30_000))
    await _fails_fast_with_runtime_stopped(rt, pending)


async def test_a_tool_call_in_flight_is_cancelled_and_fails_at_once(tmp_path):
    finished, cancelled = [], []

    @tool("slow.work")
    async def slow_work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        finished.append(True)
        return "done"

    rt = await Loom(workspace=tmp_path, native_tools=()).start()
    rt.tools.register(slow_work)
    pending = asyncio.create_task(rt.tools.invoke("slow.work", {}, timeout=30))
    await _fails_fast_with_runtime_stopped(rt, pending)
    assert cancelled == [True] and finished == []
    with pytest.raises(RuntimeStopped):  # and nothing new starts
        await rt.tools.invoke("slow.work", {})


async def test_a_pending_call_to_a_bridged_agent_fails_with_runtime_stopped(tmp_path):
    rt = await Loom(workspace=tmp_path, native_tools=()).start()
    server = await rt.start_bridge(port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = bridge_pb2_grpc.BridgeStub(channel)
    cap = action_pb2.CapabilityDescriptor(name="far.work", version="1.0")
    await stub.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id="far", capabilities=[cap]))
    out: asyncio.Queue = asyncio.Queue()
    out.put_nowait(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id="far")))
    out.put_nowait(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1)))

    async def gen():
        while (msg := await out.get()) is not None:
            yield msg

    call = stub.EventStream(gen())
    assert (await call.read()).WhichOneof("msg") == "pong"  # the hub took the Ack: the agent is connected
    pending = asyncio.create_task(rt.tools.invoke("far.work", {}, timeout=30))
    async with asyncio.timeout(5):
        while (await call.read()).WhichOneof("msg") != "action_call":  # the agent holds the call
            pass
    await _fails_fast_with_runtime_stopped(rt, pending)
    out.put_nowait(None)
    await channel.close()


class Part:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def aclose(self) -> None:
        self.log.append(f"close {self.name}")
        if self.fail:
            raise OSError(f"{self.name} would not close")


async def test_parts_start_in_order_close_in_reverse_and_one_failure_skips_nothing(tmp_path):
    log: list[str] = []
    rt = Loom(workspace=tmp_path, native_tools=())
    await rt.add_component(Part("first", log))
    await rt.add_component(Part("broken", log, fail=True))
    await rt.start()
    await rt.add_component(Part("late", log))  # started at once: the runtime runs
    await rt.add_component(Part("also-broken", log, fail=True))
    before = asyncio.all_tasks()
    with pytest.raises(StopFailed) as raised:
        await rt.stop()
    assert log == [
        "start first",
        "start broken",
        "start late",
        "start also-broken",
        "close also-broken",
        "close late",
        "close broken",
        "close first",
    ]
    assert [str(e) for e in raised.value.exceptions] == ["also-broken would not close", "broken would not close"]
    assert isinstance(raised.value, loom.LoomError) and rt.state == "stopped"
    assert rt.bus.closed and rt.bus.subscriptions() == []  # the runtime's own parts closed all the same
    assert not {t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()}
    await rt.stop()  # idempotent, and quiet the second time


async def test_a_part_that_fails_to_start_is_closed_and_not_kept(tmp_path):
    class Refuses(Part):
        async def start(self) -> None:
            raise OSError("no port")

    log: list[str] = []
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        with pytest.raises(OSError, match="no port"):
            await rt.add_component(Refuses("refuses", log))
        assert log == ["close refuses"]
    assert log == ["close refuses"]  # not closed twice at stop


async def test_a_stopped_runtime_takes_no_new_parts(tmp_path):
    rt = await Loom(workspace=tmp_path, native_tools=()).start()
    await rt.stop()
    with pytest.raises(loom.UsageError, match="stopped"):
        await rt.add_component(Part("late", []))


async def test_waits_share_one_timer_and_each_expires_at_its_own_deadline():
    from loom._supervisor import Supervisor

    class Waiter:
        def __init__(self) -> None:
            self.expired_at: float | None = None

        def fail(self, error: BaseException) -> None:
            pass

        def expire(self) -> None:
            self.expired_at = asyncio.get_running_loop().time()

    sup = Supervisor("deadlines")
    loop = asyncio.get_running_loop()
    start = loop.time()
    late, early, ended, rewatched = Waiter(), Waiter(), Waiter(), Waiter()
    sup.watch(late, 0.3)
    sup.watch(early, 0.05)  # a shorter deadline after a longer one
    sup.watch(ended, 0.1)
    sup.unwatch(ended)
    sup.watch(rewatched, 0.05)
    sup.unwatch(rewatched)
    sup.watch(rewatched, 0.5)  # watched again: only its new deadline counts
    for _ in range(1000):  # many waits that end before their deadline
        w = Waiter()
        sup.watch(w, 0.2)
        sup.unwatch(w)
    assert len(sup._deadlines) < 100  # their entries are pruned, not kept until they pass
    await asyncio.sleep(0.4)
    assert 0.04 < early.expired_at - start < 0.2 and 0.29 < late.expired_at - start < 0.45
    assert ended.expired_at is None and rewatched.expired_at is None
    await sup.aclose()
    assert sup._timer is None
