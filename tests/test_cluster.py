"""Runtimes in separate processes sharing one bus through a real nats-server: pub/sub both ways, each
collaboration primitive, the directory across the cluster and a remote capability call."""

from __future__ import annotations

import asyncio

import pytest

import loom
from loom.cluster import NatsServer
from tests.conftest import until
from tests.peers import cluster_procs as procs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nats_url():
    with NatsServer() as server:  # 127.0.0.1, a port the server picked, JetStream in a temp dir
        yield server.url


@pytest.fixture
async def hub(nats_url):
    """This test's runtime, joined to the cluster; it must leave no task behind."""
    before = asyncio.all_tasks()
    rt = await loom.Loom(name="hub", native_tools=()).start()
    await rt.join_cluster(nats_url, heartbeat_s=0.5)
    try:
        yield rt
    finally:
        await rt.stop()
        for _ in range(5):
            await asyncio.sleep(0)
        leaked = {t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()}
        assert not leaked, [t.get_name() for t in leaked]


async def test_events_cross_both_ways_and_never_echo(hub, nats_url):
    peer = await procs.peer("echo", nats_url, "p1")
    try:
        back = hub.bus.subscribe("from.peer.>")
        echoes = hub.bus.subscribe("to.peers")
        await until(lambda: "p1" in hub.directory, timeout=10)
        for i in range(20):
            await hub.bus.publish("to.peers", loom.Event("ping", str(i).encode()))
        got = [await asyncio.wait_for(back.get(), 5) for _ in range(20)]
        assert [d.event.payload for d in got] == [str(i).encode() for i in range(20)]  # in order
        assert {d.event.metadata["loom.origin"] for d in got} == {peer.info["node"]}
        assert echoes.qsize() == 20  # each local event once: nothing came back from the cluster
        await asyncio.sleep(0.2)
        assert echoes.qsize() == 20
        assert hub.cluster.stats()["imported"] >= 20
    finally:
        await peer.stop()


async def test_request_reply_and_fanout_fanin_across_processes(hub, nats_url):
    peers = await asyncio.gather(procs.peer("echo", nats_url, "p1"), procs.peer("echo", nats_url, "p2"))
    try:
        await until(lambda: "p1" in hub.directory and "p2" in hub.directory, timeout=10)
        reply = await loom.collab.request_reply("svc.p1", "hello", timeout=5, runtime=hub)
        assert reply is not None and reply.json() == {"from": "p1", "echo": "hello"}
        result = await loom.collab.fanout_fanin(["svc.p1", "svc.p2"], "all?", "all", timeout=5, runtime=hub)
        assert sorted(e.json()["from"] for e in result.replies) == ["p1", "p2"]
    finally:
        await procs.stop_all(peers)


async def test_contract_net_across_processes(hub, nats_url):
    peers = await asyncio.gather(procs.peer("bidder", nats_url, "short"), procs.peer("bidder", nats_url, "longest"))
    try:
        await until(lambda: "short" in hub.directory and "longest" in hub.directory, timeout=10)
        result = await loom.collab.contract_net({"job": 1}, "jobs", window=1.0, runtime=hub)
        assert len(result.proposals) == 2
        assert [a.bidder for a in result.awards] == ["agent.longest"]  # the highest score wins
        assert result.awards[0].status == "ok" and result.awards[0].result.json() == {"done_by": "longest"}
    finally:
        await procs.stop_all(peers)


async def test_barrier_across_three_runtimes(hub, nats_url):
    peers = await asyncio.gather(procs.peer("barrier", nats_url, "b1"), procs.peer("barrier", nats_url, "b2"))
    try:
        await until(lambda: "b1" in hub.directory and "b2" in hub.directory, timeout=10)
        done = hub.bus.subscribe("barrier.done")
        await hub.bus.publish("go.barrier", loom.Event("go"))
        mine = await loom.collab.barrier("meet", 3, timeout=10, participant="hub", runtime=hub)
        assert mine.ok
        reports = [(await asyncio.wait_for(done.get(), 10)).event.json() for _ in range(2)]
        assert sorted(r["who"] for r in reports) == ["b1", "b2"] and all(r["ok"] for r in reports)
    finally:
        await procs.stop_all(peers)


async def test_directory_converges_and_remote_capability_is_a_tool(hub, nats_url):
    peers = await asyncio.gather(procs.peer("echo", nats_url, "p1"), procs.peer("echo", nats_url, "p2"))
    try:
        await until(lambda: {"p1", "p2"} <= {a.agent_id for a in hub.directory.all()}, timeout=10)
        info = hub.directory.get("p1")
        assert info.location == "remote" and info.metadata["node"] == peers[0].info["node"]
        assert "svc.p1" in info.topics and info.capabilities == ("math.mul",)
        assert [a.agent_id for a in hub.directory.by_topic("svc.p2")] == ["p2"]
        await until(lambda: "math.mul" in hub.tools, timeout=5)
        assert hub.capabilities.get("math.mul").provider == "remote"
        result = await hub.tools.invoke("math.mul", {"a": 6, "b": 7})
        assert result.ok and result.output == 42
        bad = await hub.tools.invoke("math.mul", {"a": "x"})
        assert bad.error is not None and bad.error.code == "INVALID_PARAMS"  # validated here, against its schema
        # a runtime that leaves takes its entry with it; one that dies misses three heartbeats
        await peers[0].stop()
        await until(lambda: "p1" not in hub.directory, timeout=5)
        peers[1].kill()
        await until(lambda: "p2" not in hub.directory, timeout=5)
        await until(lambda: "math.mul" not in hub.tools, timeout=5)
    finally:
        await procs.stop_all(peers)


async def test_a_local_agent_is_seen_by_a_peer_runtime(hub, nats_url):
    async def on_event(ctx, topic, event):
        await ctx.reply(ctx.thread(event), "pong")

    agent = loom.Agent("local-one", topics=["svc.local"], on_event=on_event, runtime=hub)
    await agent.start()
    other = await loom.Loom(name="other", native_tools=()).start()
    try:
        await other.join_cluster(nats_url, heartbeat_s=0.5)
        await until(lambda: "local-one" in other.directory, timeout=5)
        assert other.directory.get("local-one").location == "remote"
        reply = await loom.collab.request_reply("svc.local", "ping", timeout=5, runtime=other)
        assert reply is not None and reply.text() == "pong"
    finally:
        await other.stop()
        await agent.stop()


async def test_runtimes_with_different_heartbeats_do_not_flap(hub, nats_url):
    async def on_event(ctx, topic, event):
        return None

    slow = await loom.Loom(name="slow-beat", native_tools=()).start()
    try:
        await slow.join_cluster(nats_url, heartbeat_s=2.0)  # the hub beats every 0.5 s
        await loom.Agent("steady", topics=["svc.steady"], on_event=on_event, runtime=slow).start()
        await until(lambda: "steady" in hub.directory, timeout=5)
        for _ in range(35):  # 3.5 s: longer than three of the hub's heartbeats, shorter than three of its own
            await asyncio.sleep(0.1)
            assert "steady" in hub.directory
    finally:
        await slow.stop()
