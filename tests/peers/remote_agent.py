"""A Loom agent in its own process, joined through the bridge (for the multi-process tests).

    python tests/peers/remote_agent.py ROLE ADDRESS [NAME]

Roles: echo (replies on svc.<name>), bidder (contract net on jobs, score from NAME's length),
adder (capability math.mul), researcher / writer (the trio), asker (asks svc.echo-local, then
reports on results.asker).
"""

from __future__ import annotations

import asyncio
import sys

import loom


@loom.capability("math.mul", version="1.0")
def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@loom.capability("research.search", version="1.0")
def search(query: str) -> dict:
    """A tiny offline knowledge base."""
    return {"query": query, "results": [f"Loom answers '{query}' with events."]}


async def main(role: str, address: str, name: str) -> None:
    if role == "echo":

        async def on_event(ctx, topic, event):
            await ctx.reply(ctx.thread(event), {"from": ctx.agent_id, "echo": event.text()})

        agent = loom.Agent(name, topics=[f"svc.{name}", "svc.all"], on_event=on_event, address=address)
    elif role == "bidder":

        async def on_event(ctx, topic, event):
            thread = ctx.thread(event)
            if event.type == "collab.cfp":
                await ctx.propose(thread, {"bidder": ctx.agent_id}, score=len(ctx.agent_id))
            elif event.type == "collab.award":
                await ctx.reply(thread, {"done_by": ctx.agent_id})

        agent = loom.Agent(name, topics=["jobs"], on_event=on_event, address=address)
    elif role == "adder":
        agent = loom.Agent(name, capabilities=[mul], address=address)
    elif role == "researcher":

        async def on_event(ctx, topic, event):
            if event.type == "research.request":  # the planner names its request's type (ctx.request(type=...))
                await ctx.reply(ctx.thread(event), await ctx.tool("research.search", {"query": event.text()}))

        agent = loom.Agent(name, topics=["topic.research"], capabilities=[search], on_event=on_event, address=address)
    elif role == "writer":

        async def on_event(ctx, topic, event):
            if event.type == "collab.request":
                brief = event.json()
                await ctx.reply(
                    ctx.thread(event), f"Q: {brief['question']} A: {' '.join(brief['research']['results'])}"
                )

        agent = loom.Agent(name, topics=["topic.writer"], on_event=on_event, address=address)
    else:
        raise SystemExit(f"unknown role {role!r}")
    await agent.start()
    print(f"ready {name} {agent._transport.stream_kind}", flush=True)  # "local" or "grpc" stream
    await agent.run()


if __name__ == "__main__":
    role, address = sys.argv[1], sys.argv[2]
    asyncio.run(main(role, address, sys.argv[3] if len(sys.argv) > 3 else role))
