"""Request/reply round trips through Context.request between two agents in one process.

    python bench/rpc.py [--calls 10000] [--warmup 500] [--runs 3]

Prints one JSON line per run and a summary line with medians: p50/p99 latency in µs and CPU µs
per call (process time / calls). `futures_baseline` is the same round trip over bare asyncio
futures and a queue, measured in the same process for ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from _stats import latency_summary


async def _loom_run(calls: int, warmup: int) -> dict:
    import loom

    async def echo(ctx, topic, event):
        if event.type == "collab.request":
            await ctx.reply(ctx.thread(event), event.payload)

    async with loom.Loom() as rt:
        server = await loom.Agent("server", topics=["svc.echo"], on_event=echo, runtime=rt).start()
        client = await loom.Agent("client", runtime=rt).start()
        thread = client.ctx.new_thread()
        lat = []
        for i in range(warmup + calls):
            t0 = time.perf_counter_ns()
            c0 = time.process_time() if i == warmup else None
            reply = await client.ctx.request(thread, "svc.echo", b"ping", timeout_ms=2000)
            if i >= warmup:
                lat.append(time.perf_counter_ns() - t0)
            if c0 is not None:
                cpu0 = c0
            assert reply is not None and reply.payload == b"ping"
        cpu = time.process_time() - cpu0
        await client.stop()
        await server.stop()
    return _summary("context_request", lat, cpu)


async def _futures_run(calls: int, warmup: int) -> dict:
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue(maxsize=1000)

    async def server():
        while True:
            payload, fut = await q.get()
            fut.set_result(payload)

    task = asyncio.ensure_future(server())
    lat = []
    for i in range(warmup + calls):
        t0 = time.perf_counter_ns()
        if i == warmup:
            cpu0 = time.process_time()
        fut = loop.create_future()
        await q.put((b"ping", fut))
        await fut
        if i >= warmup:
            lat.append(time.perf_counter_ns() - t0)
    cpu = time.process_time() - cpu0
    task.cancel()
    return _summary("futures_baseline", lat, cpu)


def _summary(name: str, lat: list[int], cpu: float) -> dict:
    return {"bench": "rpc", "workload": name, **latency_summary(lat, cpu)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    results: dict[str, list[dict]] = {"futures_baseline": [], "context_request": []}
    for _ in range(args.runs):
        for name, fn in (("futures_baseline", _futures_run), ("context_request", _loom_run)):
            r = asyncio.run(fn(args.calls, args.warmup))
            results[name].append(r)
            print(json.dumps(r), flush=True)
    for name, runs in results.items():
        med = {k: round(statistics.median(r[k] for r in runs), 2) for k in ("p50_us", "p99_us", "cpu_us_per_call")}
        print(json.dumps({"bench": "rpc", "workload": name, "summary": "median", "runs": len(runs), **med}))


if __name__ == "__main__":
    main()
