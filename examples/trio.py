"""Planner, researcher and writer answer a question together.

The planner receives ``user.question`` on ``topic.plan``, asks the researcher (a
``research.request`` on ``topic.research``, request/reply; the researcher calls its
``research.search`` capability), then asks the writer for a draft (a plain ``collab.request`` on
``topic.writer``), and replies to the user. Every event on the bus is printed as it happens.

    python examples/trio.py ["your question"]
"""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console
from rich.panel import Panel

import loom
from loom import Agent, capability

console = Console()


@capability("research.search", version="1.0")
def search(query: str, limit: int = 3) -> dict:
    """Look a query up (an offline knowledge base stands in for a web search here)."""
    facts = {
        "loom": "Loom is an event-driven agent runtime: events in, actions out, state in the middle.",
        "qos": "Subscriptions choose REALTIME (drop), BATCHED (backpressure) or BACKGROUND (large, batched).",
        "agents": "Agents are actors: one mailbox, one event at a time, in order.",
    }
    hits = [text for key, text in facts.items() if key in query.lower() or "loom" in query.lower()]
    return {"query": query, "results": hits[:limit]}


async def planner_handler(ctx, topic, event):
    if event.type == "user.question":
        thread = ctx.thread(event)
        question = event.text()
        research = await ctx.request(
            thread, "topic.research", payload=question, type="research.request", first_k=1, timeout_ms=2000
        )
        draft = await ctx.request(
            thread, "topic.writer", payload={"question": question, "research": research.json()}, timeout_ms=2000
        )
        await ctx.reply(thread, {"done": True, "answer": draft.text() if draft else None})


async def researcher_handler(ctx, topic, event):
    if event.type == "research.request":
        found = await ctx.tool("research.search", {"query": event.text()})
        await ctx.reply(ctx.thread(event), found)


async def writer_handler(ctx, topic, event):
    if event.type == "collab.request":
        brief = event.json()
        points = " ".join(brief["research"]["results"]) or "I found nothing on that."
        await ctx.reply(ctx.thread(event), f"Q: {brief['question']}\nA: {points}")


def show(topic: str, event: loom.Event) -> None:
    sender = event.metadata.get("sender") or event.source or "?"
    preview = event.payload.decode(errors="replace").replace("\n", " ⏎ ")[:48]
    hop = event.metadata.get("hop", "0")
    console.print(
        f"[dim]hop {hop}[/] [cyan]{sender:<16}[/] → [green]{topic[:22]:<22}[/] [bold]{event.type:<14}[/] {preview}",
        no_wrap=True,
        overflow="ellipsis",
    )


async def main(rt: loom.Loom, question: str) -> dict:
    rt.bus.subscribe(["topic.>", "agent.>", "thread.>"], callback=show, qos=loom.QoS.REALTIME, maxsize=1024)
    agents = [
        Agent("planner", topics=["topic.plan"], on_event=planner_handler),
        Agent("researcher", topics=["topic.research"], capabilities=[search], on_event=researcher_handler),
        Agent("writer", topics=["topic.writer"], on_event=writer_handler),
    ]
    for agent in agents:
        await agent.start()
    console.rule("[bold]trio: planner → researcher (+ capability) → writer")
    reply = await loom.request_reply("topic.plan", question, timeout=5, type="user.question", sender="user")
    await asyncio.sleep(0.05)  # let the observer print the last events
    answer = reply.json() if reply else {"done": False, "answer": None}
    console.print(Panel(answer["answer"] or "no answer (timeout)", title="answer", expand=False))
    for agent in agents:
        await agent.stop()
    return answer


if __name__ == "__main__":
    q = sys.argv[1] if len(sys.argv) > 1 else "What is Loom and how do its agents handle QoS?"
    result = loom.run(lambda rt: main(rt, q))
    sys.exit(0 if result["done"] else 1)
