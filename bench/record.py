"""Recorder benchmarks: one JSON line per workload (median of N runs, each in a fresh process).

    python bench/record.py              # off, on, replay; 3 runs each
    python bench/record.py --runs 5 on

Workloads publish the same N distinct events (JSON payload, metadata) to one BATCHED consumer:
``off`` without recording, ``on`` with ``Loom(record=...)`` recording everything; ``replay``
re-publishes the recorded log at speed "max". Fields: recorded_per_s (publish start until the last
batch is committed), dropped, batches, loop_cpu_us_per_publish (CPU of the event-loop thread, where
publishers run), process_cpu_us_per_publish (all threads, the SQLite writer included). A last line
gives the on/off ratio of the publisher's CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _stats import workload_args

N = 100_000


def _events() -> list:
    import loom

    return [
        loom.Event.from_json("order.update", {"i": i, "sym": "BTC", "qty": i % 17}, source="bench", metadata={"k": "v"})
        for i in range(N)
    ]


async def _publish(record: Path | None) -> dict:
    import loom

    events = _events()
    async with loom.Loom(record=record, native_tools=()) as rt:
        sub = rt.bus.subscribe("bench.>")

        async def consume() -> None:
            seen = 0
            async for _ in sub:
                seen += 1
                if seen == N:
                    return

        consumer = rt.spawn(consume(), name="bench.consume")
        await asyncio.sleep(0.05)  # the recorder's file is open
        publish = rt.bus.publish
        c0, p0, t0 = time.thread_time(), time.process_time(), time.perf_counter()
        for i, event in enumerate(events):
            await publish(f"bench.{i % 8}", event)
        loop_cpu, proc_cpu = time.thread_time() - c0, time.process_time() - p0
        await consumer
        recorder = rt.recorder
        if recorder is not None:
            await recorder.aclose()  # the last batches committed
        wall = time.perf_counter() - t0
    out = {
        "published": N,
        "loop_cpu_us_per_publish": loop_cpu / N * 1e6,
        "process_cpu_us_per_publish": proc_cpu / N * 1e6,
        "publish_wall_s": wall,
    }
    if recorder is not None:
        st = recorder.stats
        out.update(recorded=st.recorded, dropped=st.dropped, batches=st.batches, recorded_per_s=st.recorded / wall)
    return out


async def _replay(path: Path) -> dict:
    import loom

    await _publish(path)
    async with loom.Loom(native_tools=()) as rt:
        sub = rt.bus.subscribe("bench.>", qos=loom.QoS.BACKGROUND, maxsize=N)
        summary = await rt.replay(path, speed="max")
        assert sub.qsize() == N
    return {"replayed": summary.events, "replayed_per_s": summary.events / summary.duration_s}


def _worker(name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        result = asyncio.run(
            {"off": lambda: _publish(None), "on": lambda: _publish(path), "replay": lambda: _replay(path)}[name]()
        )
        if path.exists():
            result["log_mb"] = path.stat().st_size / 1e6
    print(json.dumps(result))


WORKLOADS = ("off", "on", "replay")


def main() -> None:
    args = workload_args(__doc__, WORKLOADS)
    if args.worker:
        _worker(args.worker)
        return
    results = {}
    for name in args.workloads:
        runs = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", name],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            runs.append(json.loads(out.stdout))
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[name] = line = {"bench": "record", "workload": name, "runs": args.runs, **med}
        print(json.dumps(line), flush=True)
    if "on" in results and "off" in results:
        for key in ("loop_cpu_us_per_publish", "process_cpu_us_per_publish"):
            ratio = results["on"][key] / results["off"][key]
            print(json.dumps({"bench": "record", "ratio": f"on/off {key}", "value": round(ratio, 2)}))


if __name__ == "__main__":
    main()
