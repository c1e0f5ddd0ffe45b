"""Replicas: one agent in a queue group of three ``loom worker`` processes (each event handled once,
the others take over when one dies) and the same on JetStream (a killed worker loses nothing)."""

from __future__ import annotations

import asyncio
import collections

import pytest

import loom
from loom.cluster import NatsServer
from tests.conftest import until
from tests.peers import cluster_procs as procs

pytestmark = pytest.mark.slow


@pytest.fixture
def nats_url():
    with NatsServer() as server:  # a fresh server: no stream or consumer left from another test
        yield server.url


async def _publish(rt: loom.Loom, ids: list[str], start: int, stop: int, gap: float = 0.002) -> None:
    for i in range(start, stop):
        event = loom.Event("work", str(i).encode())
        ids.append(event.id)
        await rt.bus.publish(f"work.in.{i % 7}", event)
        await asyncio.sleep(gap)


async def test_queue_group_of_three_handles_each_event_once_and_survives_a_kill(nats_url):
    workers = await asyncio.gather(*(procs.worker(nats_url, LOOM_WORK_MS="2") for _ in range(3)))
    try:
        async with loom.Loom(name="hub", native_tools=()) as rt:
            await rt.join_cluster(nats_url, share_directory=False)
            done = rt.bus.subscribe("work.done", maxsize=10_000)
            ids: list[str] = []
            await _publish(rt, ids, 0, 150)
            workers[0].kill()  # mid-stream: the group goes on with two members
            await _publish(rt, ids, 150, 300)
            handled: collections.Counter[str] = collections.Counter()
            by_pid: collections.Counter[str] = collections.Counter()

            async def collect() -> None:
                while True:
                    body = (await done.get()).event.json()
                    handled[body["id"]] += 1
                    by_pid[body["pid"]] += 1

            collector = asyncio.create_task(collect())
            try:
                await until(lambda: set(ids[170:]) <= set(handled), timeout=20)  # after the kill: all of them
            finally:
                collector.cancel()
            assert max(handled.values()) == 1  # never twice
            assert len(handled) >= 290  # core NATS: only what the killed worker held is lost
            survivors = {str(w.pid) for w in workers[1:]}
            assert survivors <= set(by_pid)  # the work was shared
            assert all(by_pid[p] > 20 for p in survivors)
    finally:
        await procs.stop_all(workers)


async def test_durable_workers_lose_nothing_when_one_is_killed(nats_url):
    workers = await asyncio.gather(
        *(
            procs.worker(nats_url, "tests.peers.cluster_agents:slow", "--durable", "--ack-wait", "2", LOOM_WORK_MS="5")
            for _ in range(3)
        )
    )
    try:
        async with loom.Loom(name="hub", native_tools=()) as rt:
            await rt.join_cluster(nats_url, share_directory=False, durable=["work.in.>"])
            done = rt.bus.subscribe("work.done", maxsize=10_000)
            ids: list[str] = []
            await _publish(rt, ids, 0, 100, gap=0.001)
            workers[0].kill()  # with messages pulled but not acked: redelivered to the others
            await _publish(rt, ids, 100, 200, gap=0.001)
            assert await rt.cluster.durable_export.flush(10)
            assert rt.cluster.durable_export.stats()["lost"] == 0
            handled = await procs.reports_by_id(done, ids, timeout=30)
            assert set(handled) == set(ids)  # at-least-once: every event, after the crash too
            assert sum(handled.values()) - len(ids) <= 64  # redelivered at most what the dead one held
    finally:
        await procs.stop_all(workers)


async def test_a_burst_to_a_queue_group_is_shared_event_by_event(nats_url):
    workers = await asyncio.gather(*(procs.worker(nats_url, LOOM_WORK_MS="10") for _ in range(2)))
    try:
        async with loom.Loom(name="hub", native_tools=()) as rt:
            await rt.join_cluster(nats_url, heartbeat_s=0.5)  # the shared directory says work.in.* is a group's
            await until(lambda: rt.cluster.grouped.matches("work.in.1"), timeout=10)
            done = rt.bus.subscribe("work.done", maxsize=1000)
            for i in range(60):  # a burst: it queues, yet never leaves batched for a queue group
                rt.bus.publish_nowait(f"work.in.{i % 3}", loom.Event("work", str(i).encode()))
            by_pid = collections.Counter(
                [(await asyncio.wait_for(done.get(), 10)).event.json()["pid"] for _ in range(60)]
            )
            assert set(by_pid) == {str(w.pid) for w in workers} and min(by_pid.values()) >= 15
    finally:
        await procs.stop_all(workers)
