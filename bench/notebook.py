"""Notebook figures: `%loom start` time, comm messages per second and inspector CPU under load.

    python bench/notebook.py [--runs 3] [--seconds 5] [--rate 10000]

Prints JSON lines:
- `loom_start`: wall time of `%load_ext loom` and of `%loom start` in a fresh real kernel.
- `inspectors_load`: a producer publishes `rate` events/s for `seconds` with all five inspectors
  attached; comm messages each widget sent per second (counted at the widget's send), and the
  process CPU with and without the inspectors for the same load (the difference is what the
  inspectors cost the kernel).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time


def loom_start_once() -> dict:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        timings = {}
        for label, code in (("load_ext_s", "%load_ext loom"), ("start_s", "%loom start --name bench")):
            t0 = time.perf_counter()
            reply = kc.execute_interactive(code, timeout=60, output_hook=lambda msg: None)
            timings[label] = time.perf_counter() - t0
            assert reply["content"]["status"] == "ok", reply["content"]
        return timings
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


async def load_once(seconds: float, rate: int, with_inspectors: bool) -> dict:
    import loom
    from loom.notebook import AgentInspector, BusInspector, ContextInspector, Topology, TraceTimeline

    async with loom.Loom() as rt:

        async def sink(ctx, topic, event):
            pass

        await loom.Agent("sink", topics=["load.>"], on_event=sink).start()
        counts: dict[str, int] = {}
        widgets = []
        if with_inspectors:
            widgets = [
                BusInspector(rt),
                AgentInspector(rt),
                ContextInspector("sink", rt),
                TraceTimeline(rt),
                Topology(rt),
            ]
            for w in widgets:
                name = type(w).__name__
                counts[name] = 0
                original = w._send

                def spy(msg, buffers=None, _orig=original, _name=name):
                    counts[_name] += 1
                    return _orig(msg, buffers)

                w._send = spy
        event = loom.Event("tick", b'{"v":1}')
        batch = max(rate // 100, 1)  # 100 bursts per second
        c0, t0 = time.process_time(), time.perf_counter()
        sent = 0
        while time.perf_counter() - t0 < seconds:
            for _ in range(batch):
                await rt.bus.publish(f"load.{sent % 10}", event)
                sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
        await asyncio.sleep(0.2)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        for w in widgets:
            w.close()
        return {"events": sent, "wall_s": wall, "cpu_s": cpu, "msgs": counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=10_000)
    args = ap.parse_args()

    starts = [loom_start_once() for _ in range(args.runs)]
    print(
        json.dumps(
            {
                "bench": "notebook",
                "workload": "loom_start",
                "runs": args.runs,
                "load_ext_s_median": round(statistics.median(s["load_ext_s"] for s in starts), 4),
                "start_s_median": round(statistics.median(s["start_s"] for s in starts), 4),
                "start_s_runs": [round(s["start_s"], 4) for s in starts],
            }
        ),
        flush=True,
    )

    with_, without = [], []
    for _ in range(args.runs):
        without.append(asyncio.run(load_once(args.seconds, args.rate, False)))
        with_.append(asyncio.run(load_once(args.seconds, args.rate, True)))
    per_widget = {
        name: round(statistics.median(r["msgs"][name] / r["wall_s"] for r in with_), 2) for name in with_[0]["msgs"]
    }
    cpu_with = statistics.median(r["cpu_s"] / r["wall_s"] for r in with_)
    cpu_without = statistics.median(r["cpu_s"] / r["wall_s"] for r in without)
    events_per_s = statistics.median(r["events"] / r["wall_s"] for r in with_)
    print(
        json.dumps(
            {
                "bench": "notebook",
                "workload": "inspectors_load",
                "runs": args.runs,
                "target_rate": args.rate,
                "events_per_s": round(events_per_s),
                "comm_msgs_per_s": per_widget,
                "comm_msgs_per_s_total": round(sum(per_widget.values()), 2),
                "cpu_share_without": round(cpu_without, 3),
                "cpu_share_with": round(cpu_with, 3),
                "inspector_cpu_share": round(cpu_with - cpu_without, 3),
                "inspector_cpu_us_per_event": round((cpu_with - cpu_without) / events_per_s * 1e6, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
