"""A small traced scenario the telemetry tests share: a planner asks a researcher, who calls a
tool (one user request: one trace across two agents, a request/reply and a tool call)."""

from __future__ import annotations

import loom
from loom import Agent, capability


@capability("research.search", version="1.0")
def search(query: str) -> dict:
    """Search."""
    return {"query": query, "hits": 2}


async def research_run() -> loom.Event:
    """Start the two agents in the current runtime and ask once; returns the planner's reply."""

    async def planner(ctx, topic, event):
        results = await ctx.request(ctx.thread(event), "topic.research", payload=event.payload, timeout_ms=2000)
        await ctx.reply(ctx.thread(event), {"research": results.json()})

    async def researcher(ctx, topic, event):
        await ctx.reply(ctx.thread(event), await ctx.tool("research.search", {"query": event.text()}))

    await Agent("planner", topics=["topic.plan"], on_event=planner).start()
    await Agent("researcher", topics=["topic.research"], capabilities=[search], on_event=researcher).start()
    return await loom.request_reply("topic.plan", "What is Loom?", timeout=2)
