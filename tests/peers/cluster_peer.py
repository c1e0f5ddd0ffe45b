"""A Loom runtime in its own process, joined to a NATS server (for the cluster tests).

    python tests/peers/cluster_peer.py ROLE URL NAME [OPTIONS_JSON]

Roles: ``echo`` (agent NAME replies on svc.NAME / svc.all, offers math.mul, forwards ``to.peers``
events to ``from.peer.NAME``), ``bidder`` (contract net on ``jobs``, score = len(NAME)),
``barrier`` (waits at barrier ``meet`` with 3 parties when told on ``go.barrier``).
Prints one JSON line ``{"ready": true, ...}`` once joined, ends on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import loom


@loom.capability("math.mul", version="1.0")
def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def make_agent(role: str, name: str, rt: loom.Loom) -> loom.Agent:
    if role == "echo":

        async def on_event(ctx, topic, event):
            if topic == "to.peers":
                await ctx.emit(f"from.peer.{name}", event.payload, type="peer.forward")
            else:
                await ctx.reply(ctx.thread(event), {"from": name, "echo": event.text()})

        return loom.Agent(name, topics=[f"svc.{name}", "svc.all", "to.peers"], capabilities=[mul], on_event=on_event)
    if role == "bidder":

        async def on_event(ctx, topic, event):
            thread = ctx.thread(event)
            if event.type == "collab.cfp":
                await ctx.propose(thread, {"bidder": name}, score=len(name))
            elif event.type == "collab.award":
                await ctx.reply(thread, {"done_by": name})

        return loom.Agent(name, topics=["jobs"], on_event=on_event)
    if role == "barrier":

        async def on_event(ctx, topic, event):
            result = await loom.collab.barrier("meet", 3, timeout=10, participant=name, runtime=rt)
            await ctx.emit("barrier.done", {"who": name, "ok": result.ok}, type="barrier.done")

        return loom.Agent(name, topics=["go.barrier"], on_event=on_event)
    raise SystemExit(f"unknown role {role!r}")


async def main(role: str, url: str, name: str, options: dict) -> None:
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    async with loom.Loom(name=name, native_tools=()) as rt:
        await rt.join_cluster(url, **options)
        agent = make_agent(role, name, rt)
        await agent.start()
        print(json.dumps({"ready": True, "node": rt.cluster.node, "pid": os.getpid()}), flush=True)
        await stop.wait()
        loop.remove_reader(sys.stdin.fileno())


if __name__ == "__main__":
    opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {"heartbeat_s": 0.5}
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], opts))
