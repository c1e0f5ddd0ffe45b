"""Event log, recorder and replay: what is recorded comes back the same, in order and in time."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import loom
from loom.cli import main as cli_main
from loom.store import EventLog, EventLogError, Recorder

from .conftest import until

PATTERNS = ("orders.>", "orders.*.created", "audit.>", ">")


def _events(n: int) -> list[tuple[str, loom.Event]]:
    out = []
    for i in range(n):
        topic = ("orders.eu.created", "orders.us.paid", "audit.login", "misc")[i % 4]
        out.append(
            (
                topic,
                loom.Event(
                    f"type{i % 3}",
                    f"payload-{i}".encode() + bytes([i % 256]),
                    source=f"agent.{i % 2}",
                    metadata={"k": str(i), "ünï": "cødé"} if i % 2 else None,
                    tags=["a", "b"] if i % 5 == 0 else (),
                    priority=i % 101,
                    confidence=(i % 10) / 10,
                ),
            )
        )
    return out


def _seen(sub: loom.Subscription) -> list[tuple[str, tuple]]:
    items = []
    while sub.qsize():
        topic, e = sub.get_nowait()
        items.append((topic, tuple(getattr(e, f) for f in loom.Event.FIELDS)))
    return items


async def test_a_replayed_session_gives_every_subscription_the_same_deliveries(tmp_path):
    path = tmp_path / "session.db"
    async with loom.Loom(record=path, native_tools=()) as rt:
        subs = [rt.bus.subscribe(p, qos=loom.QoS.BACKGROUND) for p in PATTERNS]
        for topic, event in _events(400):
            await rt.bus.publish(topic, event)
        recorded = [_seen(s) for s in subs]
    stats = rt.recorder.stats
    assert (stats.recorded, stats.dropped, stats.queued) == (400, 0, 0)
    assert stats.batches >= 1

    async with loom.Loom(native_tools=()) as fresh:
        subs = [fresh.bus.subscribe(p, qos=loom.QoS.BACKGROUND) for p in PATTERNS]
        summary = await fresh.replay(path, speed="max")
        replayed = [_seen(s) for s in subs]
    assert summary.events == 400 and summary.skipped == 0
    assert summary.delivered == sum(len(r) for r in recorded)
    assert [len(r) for r in recorded] == [200, 100, 100, 400]
    assert replayed == recorded  # same topics, ids, types, payloads, metadata, in the same order


async def test_replay_at_speed_one_keeps_the_recorded_gaps_and_max_does_not_wait(tmp_path):
    path = tmp_path / "timed.db"
    gaps = [0.0, 0.15, 0.05, 0.3]
    async with loom.Loom(record=path, native_tools=()) as rt:
        for i, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            await rt.bus.publish("tick", loom.Event("tick", str(i).encode()))

    async def arrivals(speed: float | str) -> tuple[list[float], float]:
        async with loom.Loom(native_tools=()) as fresh:
            sub = fresh.bus.subscribe("tick")
            t0, seen = time.perf_counter(), []

            async def watch() -> None:
                async for _ in sub:
                    seen.append(time.perf_counter() - t0)
                    if len(seen) == len(gaps):
                        return

            watcher = fresh.spawn(watch(), name="test.watch")
            summary = await fresh.replay(path, speed=speed)
            await watcher
            return seen, summary.duration_s

    seen, duration = await arrivals(1.0)
    expected = [sum(gaps[1 : i + 1]) for i in range(len(gaps))]
    for got, want in zip(seen, expected, strict=True):
        assert want - 0.02 <= got <= want + 0.1, (seen, expected)
    assert duration == pytest.approx(expected[-1], abs=0.1)
    seen, _ = await arrivals(2.0)
    assert seen[-1] == pytest.approx(expected[-1] / 2, abs=0.08)
    seen, duration = await arrivals("max")
    assert duration < 0.1


async def test_replay_can_keep_some_topics_and_stop_early(rt, tmp_path):
    path = tmp_path / "filtered.db"
    async with loom.Loom(record=path, record_topics=["orders.>", "audit.*"], native_tools=()) as rec:
        for topic, event in _events(40):
            await rec.bus.publish(topic, event)
        await asyncio.sleep(0.2)
        await rec.bus.publish("orders.late", loom.Event("late"))
    with EventLog(path, readonly=True) as log:
        assert len(log) == 31  # "misc" was never recorded
    sub = rt.bus.subscribe(">")
    summary = await rt.replay(path, speed="max", topics=["audit.>"])
    assert (summary.events, summary.skipped) == (10, 21)
    assert {t for t, _ in _seen(sub)} == {"audit.login"}
    summary = await rt.replay(path, speed="max", until=0.1)
    assert summary.events == 30 and "orders.late" not in summary.topics
    with pytest.raises(loom.UsageError):
        await rt.replay(path, speed=0)
    with pytest.raises(loom.InvalidTopic):
        await rt.replay(path, topics=["bad..pattern"])


async def test_recording_never_drops_even_when_the_writer_falls_behind(tmp_path):
    # A queue far smaller than the burst: the publisher waits for the writer instead of losing events.
    async with loom.Loom(native_tools=()) as rt:
        recorder = await rt.add_component(
            Recorder(rt.bus, tmp_path / "burst.db", ["load.>"], maxsize=64, batch_size=32)
        )
        event = loom.Event("tick", b"x" * 64)
        for i in range(20_000):
            await rt.bus.publish(f"load.{i % 7}", event)
        rt.bus.publish_nowait("other", event)  # not recorded: no subscription to count against
    stats = recorder.stats
    assert (stats.recorded, stats.dropped, stats.write_errors) == (20_000, 0, 0)
    assert 20_000 / 32 <= stats.batches < 20_000
    with EventLog(tmp_path / "burst.db", readonly=True) as log:
        seqs = [r.seq for r in log]
        assert seqs == list(range(1, 20_001))
        assert log.sessions()[0][2] == loom.__version__


async def test_a_second_recording_appends_a_session_and_replay_plays_both_back_to_back(tmp_path):
    path = tmp_path / "two.db"
    for n in (3, 2):
        async with loom.Loom(record=path, native_tools=()) as rt:
            for i in range(n):
                await rt.bus.publish("s", loom.Event("e", bytes([i])))
            await asyncio.sleep(0.1)
    with EventLog(path, readonly=True) as log:
        assert [s[0] for s in log.sessions()] == [1, 2]
        assert [r.session for r in log] == [1, 1, 1, 2, 2]
    async with loom.Loom(native_tools=()) as rt:
        summary = await rt.replay(path, speed=1.0)
    assert summary.events == 5 and summary.duration_s < 0.1  # no gap between the sessions


def test_a_log_cut_by_sigkill_opens_and_replays_up_to_its_last_complete_record(tmp_path):
    path = tmp_path / "killed.db"
    script = textwrap.dedent(
        f"""
        import asyncio, loom
        async def main():
            async with loom.Loom(record={str(path)!r}, native_tools=()) as rt:
                i = 0
                while True:
                    i += 1
                    await rt.bus.publish(f"k.{{i % 5}}", loom.Event.from_json("n", {{"i": i}}))
                    if i % 2000 == 0:
                        print(rt.recorder.stats.recorded, flush=True)
                        await asyncio.sleep(0)
        asyncio.run(main())
        """
    )
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            while int(proc.stdout.readline() or -1) < 10_000:
                assert proc.poll() is None, "the recording process ended early"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    with EventLog(path, readonly=True) as log:
        records = list(log)
    assert len(records) >= 10_000
    # every record is whole and they run 1..n with nothing missing: the cut fell between commits
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert [r.event.json()["i"] for r in records] == list(range(1, len(records) + 1))

    async def replay() -> loom.store.ReplaySummary:
        async with loom.Loom(native_tools=()) as rt:
            sub = rt.bus.subscribe("k.>", qos=loom.QoS.BACKGROUND, maxsize=len(records))
            summary = await rt.replay(path, speed="max")
            assert sub.qsize() == len(records)
            return summary

    assert asyncio.run(replay()).events == len(records)
    # and recording may go on in the same file, in a new session
    asyncio.run(_record_one(path))
    with EventLog(path, readonly=True) as log:
        assert len(log) == len(records) + 1 and len(log.sessions()) == 2


async def _record_one(path: Path) -> None:
    async with loom.Loom(record=path, native_tools=()) as rt:
        await rt.bus.publish("k.after", loom.Event("after"))


def _newer(path: Path) -> None:
    EventLog(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()


def _foreign(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()


def _corrupt(path: Path) -> None:
    with EventLog(path) as log:
        log.append(log.new_session(), 0, 0, _events(300))
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 3] = b"\xa5" * 4096  # a page in the middle, the header intact
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 a zip, not a log" * 10), "not a SQLite database"),
        (_newer, r"newer Loom \(schema version 99"),
        (_foreign, "not a Loom event log"),
        (_corrupt, "corrupt"),
    ],
    ids=["not_sqlite", "newer", "foreign", "corrupt"],
)
async def test_an_unusable_file_is_refused_by_name_and_left_untouched(tmp_path, make, reason):
    path = tmp_path / "bad.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(EventLogError, match=reason) as err:
        EventLog(path)
    assert str(path) in str(err.value)
    for readonly in (True, False):
        with pytest.raises(EventLogError):
            EventLog(path, readonly=readonly)
    rt = loom.Loom(record=path, native_tools=())
    with pytest.raises(EventLogError):
        await rt.start()
    assert rt.state == "stopped"
    with pytest.raises(EventLogError):
        async with loom.Loom(native_tools=()) as fresh:
            await fresh.replay(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"]  # no -wal/-shm left behind either


async def test_retention_by_size_keeps_the_newest_records_under_the_bound(tmp_path):
    path = tmp_path / "sized.db"
    limit = 256 * 1024
    async with loom.Loom(native_tools=()) as rt:
        rec = await rt.add_component(Recorder(rt.bus, path, max_bytes=limit, batch_size=200))
        for i in range(10_000):
            await rt.bus.publish("big", loom.Event("blob", i.to_bytes(4, "big") + b"z" * 300))
    assert rec.stats.recorded == 10_000 and rec.stats.pruned > 5000 and rec.stats.dropped == 0
    assert path.stat().st_size <= limit * 1.5  # the bound plus at most a batch and free pages
    with EventLog(path, readonly=True) as log:
        seqs = [r.seq for r in log]
        assert seqs == list(range(seqs[0], 10_001))  # a contiguous tail, the newest kept
        assert int.from_bytes(log.read(seqs[-2])[0].event.payload[:4], "big") == 9_999


async def test_retention_by_age_drops_what_is_older_than_max_age(tmp_path):
    path = tmp_path / "aged.db"
    async with loom.Loom(native_tools=()) as rt:
        rec = await rt.add_component(Recorder(rt.bus, path, max_age_s=0.3))
        for _ in range(50):
            await rt.bus.publish("old", loom.Event("e"))
        await until(lambda: rec.stats.recorded == 50)
        await asyncio.sleep(0.4)
        await rt.bus.publish("new", loom.Event("e"))
        await until(lambda: rec.stats.recorded == 51)
    assert rec.stats.pruned == 50
    with EventLog(path, readonly=True) as log:
        assert [r.topic for r in log] == ["new"]


async def test_start_nowait_records_too_and_stop_writes_what_is_queued(tmp_path):
    rt = loom.Loom(record=tmp_path / "nowait.db", native_tools=()).start_nowait()
    try:
        await until(lambda: rt.recorder.stats.batches == 0 and rt.bus.subscriptions())
        for _ in range(5000):
            rt.bus.publish_nowait("q", loom.Event("e"))  # lands in the queue; stop must write it all
    finally:
        await rt.stop()
    assert (rt.recorder.stats.recorded, rt.recorder.stats.dropped) == (5000, 0)
    with pytest.raises(loom.UsageError):
        Recorder(rt.bus, tmp_path / "x.db", [])
    with pytest.raises(loom.InvalidTopic):
        loom.Loom(record=tmp_path / "x.db", record_topics=["orders..x"])


def test_loom_replay_prints_a_summary(tmp_path, capsys):
    path = tmp_path / "cli.db"
    asyncio.run(_record_one(path))
    assert cli_main(["replay", str(path), "--speed", "max", "--topics", "k.>"]) == 0
    out = capsys.readouterr().out
    assert '"events": 1' in out and '"k.after": 1' in out
    assert cli_main(["replay", str(tmp_path / "missing.db")]) == 2
    assert "no such event log" in capsys.readouterr().err


async def test_a_failed_write_is_counted_as_dropped_and_recording_goes_on(tmp_path, caplog):
    async with loom.Loom(native_tools=()) as rt:
        rec = await rt.add_component(Recorder(rt.bus, tmp_path / "full.db", batch_size=100))
        await rt.bus.publish("a", loom.Event("e"))
        await until(lambda: rec.stats.recorded == 1)
        # A real SQLITE_FULL: the file may not grow past the pages it has (as on a full disk).
        conn = rec._log._conn  # the writer thread's connection, used from that thread
        pages = await rec._call(lambda: conn.execute("PRAGMA page_count").fetchone()[0])
        await rec._call(lambda: conn.execute(f"PRAGMA max_page_count = {pages}").fetchall())
        for _ in range(100):
            await rt.bus.publish("a", loom.Event("big", b"x" * 4000))
        await until(lambda: rec.stats.queued == 0 and rec.stats.write_errors >= 1)
        await rec._call(lambda: conn.execute("PRAGMA max_page_count = 1000000").fetchall())
        await rt.bus.publish("a", loom.Event("after"))
        await until(lambda: rec.stats.recorded == 2)
    assert (rec.stats.recorded, rec.stats.dropped) == (2, 100)
    assert "writing" in caplog.text and "failed" in caplog.text
    with EventLog(tmp_path / "full.db", readonly=True) as log:
        assert [r.event.type for r in log] == ["e", "after"]


async def test_replaying_a_log_into_the_runtime_recording_it_stops_at_what_was_there(tmp_path):
    path = tmp_path / "loop.db"
    async with loom.Loom(record=path, native_tools=()) as rt:
        for i in range(10):
            await rt.bus.publish("x", loom.Event("e", bytes([i])))
        await until(lambda: rt.recorder.stats.recorded == 10)
        summary = await rt.replay(path, speed="max")
        assert summary.events == 10
    with EventLog(path, readonly=True) as log:
        assert len(log) == 20


async def test_agent_state_snapshots_are_recorded_and_replayed_with_the_traffic(tmp_path):
    path = tmp_path / "state.db"

    class Counter:
        async def on_event(self, event, state):
            state.persistent["count"] = state.persistent.get("count", 0) + 1

    async with loom.Loom(record=path, record_topics=["orders.>", "system.agent.*.state"], native_tools=()) as rt:
        await rt.agents.create("counter", Counter(), topics=["orders.>"])
        await rt.agents.start("counter")
        for i in range(3):
            await rt.bus.publish("orders.new", loom.Event("order", str(i).encode()))
        await until(lambda: rt.agents["counter"].handled == 3)
    with EventLog(path, readonly=True) as log:
        records = [(r.topic, r.event.type, r.event.json() if r.event.type == "agent.state" else None) for r in log]
    states = [body["persistent"]["count"] for topic, kind, body in records if kind == "agent.state"]
    assert states == [1, 2, 3]  # a snapshot after each event that changed the state, in order with the traffic
    kinds = [k for _, k, _ in records]
    assert kinds.count("order") == 3 and kinds.index("order") < kinds.index("agent.state")  # each after its cause
    assert {t for t, k, _ in records if k == "agent.state"} == {"system.agent.counter.state"}

    async with loom.Loom(native_tools=()) as fresh:  # replay shows how the state evolved, step by step
        sub = fresh.bus.subscribe("system.agent.*.state", qos=loom.QoS.BACKGROUND)
        await fresh.replay(path, speed="max")
        assert [e.json()["persistent"]["count"] for _, e in [sub.get_nowait() for _ in range(sub.qsize())]] == [1, 2, 3]
