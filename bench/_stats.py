"""What the benchmarks report: per-call latencies (nanoseconds), events counted as they arrive."""

from __future__ import annotations

import json
import statistics
import time


def latency_summary(lat_ns: list[int], cpu_s: float | None = None) -> dict:
    """calls, p50_us, p99_us (and cpu_us_per_call when the process CPU seconds are given)."""
    lat = sorted(lat_ns)
    n = len(lat)
    out = {"calls": n, "p50_us": lat[n // 2] / 1000, "p99_us": lat[(n * 99) // 100] / 1000}
    if cpu_s is not None:
        out["cpu_us_per_call"] = cpu_s / n * 1e6
    return out


def medians(runs: list[dict], digits: int = 2) -> dict:
    """Each figure's median over ``runs`` (rates, ``*_per_s``, as whole numbers)."""
    out = {}
    for key in runs[0]:
        value = statistics.median(r[key] for r in runs)
        out[key] = round(value) if key.endswith("per_s") else round(value, digits)
    return out


def workload_args(doc: str | None, workloads, extra=None):
    """The command line every bench script shares: ``[workloads...] [--runs N]`` (and the hidden
    ``--worker NAME`` a run in a fresh process gets); unknown workloads are an error; no workloads
    means all. ``extra(parser)`` adds a script's own options."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", help=f"some of {', '.join(workloads)} (default: all)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    if extra is not None:
        extra(ap)
    args = ap.parse_args()
    unknown = set(args.workloads) - set(workloads)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose from {list(workloads)}")
    args.workloads = args.workloads or list(workloads)
    return args


class Arrivals:
    """An agent handler ``(ctx, topic, event)`` counting what arrives: ``done`` is set at the ``n``-th;
    :meth:`result` is the JSON line the flow benches print (seconds from the first to then)."""

    def __init__(self, n: int) -> None:
        import asyncio

        self.n, self.got, self.first = n, 0, 0.0
        self.done = asyncio.Event()

    async def __call__(self, ctx, topic, event) -> None:
        if self.got == 0:
            self.first = time.perf_counter()
        self.got += 1
        if self.got == self.n:
            self.done.set()

    async def result(self) -> str:
        await self.done.wait()
        return json.dumps({"events": self.n, "seconds": time.perf_counter() - self.first})
