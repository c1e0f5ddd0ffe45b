"""`loom demo`: a short headless scenario on the bus, shown with rich.

A price feed publishes ticks; three subscribers show the QoS classes side by side: a REALTIME
dashboard that is slower than the feed (coalesces per symbol), a BATCHED audit log that keeps
everything in order, and a BACKGROUND analytics job that reads in batches.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from rich.console import Console
from rich.table import Table

from loom.events import Event, QoS
from loom.runtime import Loom

__all__ = ["run_demo"]

SYMBOLS = ("BTC", "ETH", "SOL", "DOGE")


async def _scenario(rt: Loom, console: Console, ticks: int) -> None:
    bus = rt.bus
    dashboard = bus.subscribe(
        "market.price.*",
        qos=QoS.REALTIME,
        maxsize=8,
        overflow="coalesce",
        name="dashboard",
        coalesce_key=lambda e: e.metadata["symbol"],
    )
    audit = bus.subscribe("market.>", qos=QoS.BATCHED, maxsize=64, name="audit")
    analytics = bus.subscribe("market.price.*", qos=QoS.BACKGROUND, name="analytics")
    shown: list[tuple[str, float]] = []
    audited = 0
    batches: list[int] = []

    async def show_dashboard() -> None:
        async for topic, event in dashboard:
            shown.append((topic.rsplit(".", 1)[1], event.json()["usd"]))
            await asyncio.sleep(0.002)  # a slow screen: it cannot keep up with the feed

    async def keep_audit() -> None:
        nonlocal audited
        async for _ in audit:
            audited += 1

    async def crunch() -> None:
        async for batch in analytics.batches(max_items=100):
            batches.append(len(batch))

    for name, coro in (("dashboard", show_dashboard()), ("audit", keep_audit()), ("analytics", crunch())):
        rt.spawn(coro, name=f"loom.demo.{name}")

    rng = random.Random(7)
    prices = {s: 100.0 * (i + 1) for i, s in enumerate(SYMBOLS)}
    console.rule("[bold]Loom demo: one feed, three QoS classes")
    for i in range(ticks):
        sym = rng.choice(SYMBOLS)
        prices[sym] *= 1 + rng.uniform(-0.01, 0.01)
        tick = Event.from_json("price.tick", {"usd": round(prices[sym], 2)}, source="feed", metadata={"symbol": sym})
        await bus.publish(f"market.price.{sym}", tick)
        if i % 20 == 0:
            await asyncio.sleep(0.001)  # a real feed has gaps; the consumers run in them
    await bus.publish("market.status", Event.from_text("market.close", "closed", source="feed"))
    await asyncio.sleep(0.1)

    table = Table(title=f"{ticks} ticks published")
    for col in ("consumer", "QoS", "delivered", "dropped", "high water", "p50 wait"):
        table.add_column(col, overflow="fold")
    for name, sub in (("dashboard", dashboard), ("audit", audit), ("analytics", analytics)):
        st = sub.stats
        dropped = "\n".join(f"{k} {v}" for k, v in st.dropped.items()) or "0"
        p50 = f"{st.latency_p50_us:.0f} µs" if st.latency_p50_us is not None else "-"
        table.add_row(name, st.qos.name, str(st.delivered), dropped, f"{st.high_water}/{st.maxsize}", p50)
    console.print(table)
    console.print(
        f"dashboard drew {len(shown)} frames (latest per symbol, coalesced); "
        f"audit logged {audited} events in order; analytics read {len(batches)} batches "
        f"(largest {max(batches, default=0)})."
    )


def run_demo(ticks: int = 2000, console: Console | None = None) -> Any:
    """Run the scenario in a fresh runtime: blocks in a script; in a running loop (a notebook)
    it returns the task to ``await``."""
    from loom.launch import run

    console = console or Console()
    return run(lambda rt: _scenario(rt, console, ticks), name="demo")
