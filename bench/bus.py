"""EventBus benchmarks: one JSON line per workload (median of N runs, each in a fresh process).

    python bench/bus.py                 # all workloads, 3 runs each
    python bench/bus.py --runs 5 pub1   # some workloads
    python bench/bus.py --runs 7 --compare 6787a86 pub1   # the same workloads on loom/ of that
                                        # commit too, runs interleaved, and the ratio (same run)

Fields: cpu_us_per_delivery (process CPU time / deliveries), delivered_per_s (wall clock),
maxrss_mb (peak RSS of the worker process), plus workload-specific extras. `queue_baseline`
is a plain asyncio.Queue fan-out of the same shape as pub1, for ratios on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _stats import workload_args

N = 100_000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _fanout(n_subs: int, extra_subs: int = 0) -> dict:
    import loom

    async with loom.Loom() as rt:
        bus = rt.bus
        for i in range(extra_subs):  # unrelated: exact, '*' and '>' patterns elsewhere in the tree
            bus.subscribe((f"other.{i}.price", f"zone.{i}.*", f"feed.{i}.>")[i % 3], qos=loom.QoS.REALTIME)
        subs = [bus.subscribe("bench.topic") for _ in range(n_subs)]
        counts = [0] * n_subs

        async def consume(k: int) -> None:
            async for _ in subs[k]:
                counts[k] += 1
                if counts[k] == N:
                    return

        consumers = [rt.spawn(consume(k), name=f"bench.consume:{k}") for k in range(n_subs)]
        event = loom.Event("tick", b"x" * 16)
        publish = bus.publish
        await asyncio.sleep(0)
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(N):
            await publish("bench.topic", event)
        await asyncio.gather(*consumers)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        deliveries = N * n_subs
        p50 = statistics.median(s.stats.latency_p50_us for s in subs)
        return {
            "deliveries": deliveries,
            "cpu_us_per_delivery": cpu / deliveries * 1e6,
            "delivered_per_s": deliveries / wall,
            "queue_wait_p50_us": p50,
        }


async def _queue_baseline() -> dict:
    q: asyncio.Queue[object] = asyncio.Queue(maxsize=2048)
    done = 0

    async def consume() -> None:
        nonlocal done
        while done < N:
            await q.get()
            done += 1

    task = asyncio.ensure_future(consume())
    item = ("bench.topic", object())
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(N):
        await q.put(item)
    await task
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"deliveries": N, "cpu_us_per_delivery": cpu / N * 1e6, "delivered_per_s": N / wall}


async def _burst() -> dict:
    import loom

    async with loom.Loom() as rt:
        sub = rt.bus.subscribe("burst.topic", qos=loom.QoS.REALTIME)  # never read
        event = loom.Event("tick", b"x" * 256)
        c0, t0 = time.process_time(), time.perf_counter()
        publish = rt.bus.publish
        for _ in range(N):
            await publish("burst.topic", event)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        st = sub.stats
        return {
            "published": N,
            "deliveries": st.delivered,
            "dropped": st.dropped,
            "cpu_us_per_publish": cpu / N * 1e6,
            "cpu_us_per_delivery": cpu / max(st.delivered, 1) * 1e6,
            "delivered_per_s": st.delivered / wall,
            "queue_depth": st.depth,
        }


async def _index_miss(extra_subs: int) -> dict:
    """Every publish goes to a topic never seen before: validation + trie walk each time."""
    import loom

    async with loom.Loom(max_topics=1000) as rt:
        bus = rt.bus
        for i in range(extra_subs):
            bus.subscribe((f"other.{i}.price", f"zone.{i}.*", f"feed.{i}.>")[i % 3], qos=loom.QoS.REALTIME)
        sub = bus.subscribe("fresh.*", qos=loom.QoS.BACKGROUND, maxsize=N)
        event = loom.Event("tick", b"x")
        topics = [f"fresh.t{i}" for i in range(N)]
        c0 = time.process_time()
        for t in topics:
            await bus.publish(t, event)
        cpu = time.process_time() - c0
        assert sub.qsize() == N
        return {"deliveries": N, "cpu_us_per_delivery": cpu / N * 1e6, "extra_subscriptions": extra_subs}


async def _traced(workload: Any) -> dict:
    import loom.telemetry

    loom.telemetry.init_telemetry(capacity=1000)  # spans into the in-memory collector only
    return await workload


async def _otel_floor() -> dict:
    """One bare OpenTelemetry SDK span (start, 5 attributes, end, into Loom's collector) per unit:
    the floor under a traced publish (which adds the event copy and its trace keys)."""
    import loom.telemetry

    loom.telemetry.init_telemetry(capacity=1000)
    from opentelemetry import trace

    tracer = trace.get_tracer_provider().get_tracer("bench")
    attrs = {"a": "x", "b": "y", "c": "z", "d": "w", "e": "v"}
    c0 = time.process_time()
    for _ in range(N):
        tracer.start_span("publish", attributes=attrs).end()
    return {"deliveries": N, "cpu_us_per_delivery": (time.process_time() - c0) / N * 1e6}


WORKLOADS = {
    "queue_baseline": lambda: _queue_baseline(),
    "pub1": lambda: _fanout(1),
    "pub1_traced": lambda: _traced(_fanout(1)),
    "otel_span_floor": lambda: _otel_floor(),
    "pub10": lambda: _fanout(10),
    "burst": lambda: _burst(),
    "fanout_index": lambda: _fanout(1, extra_subs=10_000),
    "index_miss_0": lambda: _index_miss(0),
    "index_miss_10k": lambda: _index_miss(10_000),
}


def _worker(name: str) -> None:
    result = asyncio.run(WORKLOADS[name]())
    result["maxrss_mb"] = _rss_mb()
    print(json.dumps(result))


def _run(workloads: list[str], n_runs: int, trees: dict[str, str | None]) -> dict[tuple[str, str], dict]:
    """Each workload ``n_runs`` times per tree, the trees interleaved run by run (so drift on a
    noisy machine hits them alike); one JSON line per workload and tree with the medians."""
    results = {}
    for name in workloads:
        runs: dict[str, list[dict]] = {tree: [] for tree in trees}
        for _ in range(n_runs):
            for tree, path in trees.items():
                env = {**os.environ, "PYTHONHASHSEED": "0"}
                if path is not None:  # loom/ of an older revision first on the path
                    env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
                # -P keeps this checkout's loom/ off the path; the bench's own helpers go after the tree
                bench = os.path.dirname(os.path.abspath(__file__))
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), bench]))
                cmd = [sys.executable, "-P", __file__, "--worker", name]
                out = subprocess.run(cmd, capture_output=True, text=True, check=path is None, env=env)
                if out.returncode == 0:  # an older tree may lack a workload's parts (pub1_traced)
                    runs[tree].append(json.loads(out.stdout))
        for tree, rs in runs.items():
            if not rs:
                continue
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], int | float)}
            line = {"bench": "bus", "workload": name, "tree": tree, "runs": n_runs, **rs[0], **med}
            line["cpu_us_per_delivery_runs"] = [round(r["cpu_us_per_delivery"], 3) for r in rs]
            results[name, tree] = line
            print(json.dumps(line), flush=True)
    return results


def main() -> None:
    def compare(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--compare", metavar="REV", help="also run on loom/ as of this git revision, interleaved")

    args = workload_args(__doc__, WORKLOADS, compare)
    if args.compare == "HEAD":
        raise SystemExit("bus.py: --compare takes an earlier revision (HEAD is this checkout)")
    if args.worker:
        _worker(args.worker)
        return
    trees = {"HEAD": None}
    with tempfile.TemporaryDirectory() as tmp:
        if args.compare:
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            cmd = ["git", "-C", root, "archive", args.compare, "loom"]
            archive = subprocess.run(cmd, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            trees[args.compare] = tmp
        results = _run(args.workloads, args.runs, trees)
    if args.compare:
        for name in args.workloads:
            if (name, args.compare) in results:
                head, old = results[name, "HEAD"], results[name, args.compare]
                ratio = head["cpu_us_per_delivery"] / old["cpu_us_per_delivery"]
                print(json.dumps({"bench": "bus", "ratio": f"{name} HEAD/{args.compare}", "value": round(ratio, 3)}))
    results = {name: line for (name, tree), line in results.items() if tree == "HEAD"}
    if "pub1" in results and "queue_baseline" in results:
        ratio = results["pub1"]["cpu_us_per_delivery"] / results["queue_baseline"]["cpu_us_per_delivery"]
        print(json.dumps({"bench": "bus", "ratio": "pub1/queue_baseline", "value": round(ratio, 2)}))
    if "pub1" in results and "fanout_index" in results:
        ratio = results["fanout_index"]["cpu_us_per_delivery"] / results["pub1"]["cpu_us_per_delivery"]
        print(json.dumps({"bench": "bus", "ratio": "fanout_index/pub1", "value": round(ratio, 2)}))
    if "index_miss_0" in results and "index_miss_10k" in results:
        ratio = results["index_miss_10k"]["cpu_us_per_delivery"] / results["index_miss_0"]["cpu_us_per_delivery"]
        print(json.dumps({"bench": "bus", "ratio": "index_miss_10k/index_miss_0", "value": round(ratio, 2)}))


if __name__ == "__main__":
    main()
