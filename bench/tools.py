"""Tool invocation overhead: a no-op native tool through ToolRegistry.invoke, and MCP round trips.

    python bench/tools.py [--calls 20000] [--mcp-calls 300] [--runs 3]

JSON lines: `noop_direct` (awaiting the tool's execute() directly: the floor), `noop_invoke`
(the full invoke: validation, timeout, events, result), `mcp_stdio_peer` (a round trip to
tests/peers/mcp_peer.py over stdio) and `mcp_stdio_time` (mcp-server-time), each with the
median p50 per call and CPU µs per call over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from _stats import latency_summary

ROOT = Path(__file__).resolve().parents[1]


async def noop(calls: int, direct: bool) -> dict:
    import loom

    @loom.tool("bench.noop")
    def nothing() -> None:
        return None

    async with loom.Loom(native_tools=()) as rt:
        rt.tools.register(nothing)
        tool = rt.tools.get("bench.noop")
        lat = []
        c0 = time.process_time()
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            if direct:
                await tool.execute({})
            else:
                r = await rt.tools.invoke("bench.noop", {})
                assert r.ok
            lat.append(time.perf_counter_ns() - t0)
        cpu = time.process_time() - c0
    return summary(lat, cpu)


async def mcp_round_trip(calls: int, which: str) -> dict:
    import loom

    async with loom.Loom(native_tools=()) as rt:
        if which == "peer":
            await rt.tools.add_mcp_server("p", command=sys.executable, args=[str(ROOT / "tests/peers/mcp_peer.py")])
            name, args = "p:add", {"a": 1, "b": 2}
        else:
            await rt.tools.add_mcp_server("time", command=str(Path(sys.prefix) / "bin" / "mcp-server-time"))
            name, args = "time:get_current_time", {"timezone": "UTC"}
        for _ in range(20):  # warm-up
            await rt.tools.invoke(name, args)
        lat = []
        c0 = time.process_time()
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            r = await rt.tools.invoke(name, args)
            assert r.ok, r
            lat.append(time.perf_counter_ns() - t0)
        cpu = time.process_time() - c0
    return summary(lat, cpu)


def summary(lat: list[int], cpu: float) -> dict:
    return latency_summary(lat, cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--mcp-calls", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    workloads = {
        "noop_direct": lambda: noop(args.calls, True),
        "noop_invoke": lambda: noop(args.calls, False),
        "mcp_stdio_peer": lambda: mcp_round_trip(args.mcp_calls, "peer"),
        "mcp_stdio_time": lambda: mcp_round_trip(args.mcp_calls, "time"),
    }
    for name, fn in workloads.items():
        runs = [asyncio.run(fn()) for _ in range(args.runs)]
        med = {k: round(statistics.median(r[k] for r in runs), 2) for k in ("p50_us", "p99_us", "cpu_us_per_call")}
        line = {"bench": "tools", "workload": name, "runs": args.runs, "calls": runs[0]["calls"], **med}
        line["p50_us_runs"] = [round(r["p50_us"], 2) for r in runs]
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
