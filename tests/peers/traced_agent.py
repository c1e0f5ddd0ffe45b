"""A process with telemetry on, exporting over OTLP as its standard variables say (tests/test_telemetry_bridge.py).

    python tests/peers/traced_agent.py agent ADDRESS   # an SDK agent through the bridge at ADDRESS
    python tests/peers/traced_agent.py runtime         # a small runtime: an agent, a tool call, a request
    python tests/peers/traced_agent.py busy            # like runtime, 200 requests, timed; prints JSON

Every mode calls ``loom.telemetry.init_telemetry()`` with no arguments: the endpoint, the service
name and the export intervals come from the ``OTEL_*`` variables the test sets.

``agent``: agent ``traced`` on ``svc.traced``; each request calls the hub's tool ``hub.lookup``
(ForwardAction) and replies with its output; its capability ``text.upper`` answers the hub's
ActionCalls. Prints ``ready <stream kind>``, runs until SIGTERM, then flushes its spans.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import loom
import loom.telemetry


@loom.capability("text.upper", version="1.0")
def upper(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@loom.capability("hub.lookup", version="1.0")
def lookup(q: str) -> dict:
    """A tiny offline lookup (the runtime modes' own tool)."""
    return {"q": q, "hits": len(q)}


async def _answer(ctx, topic, event):
    found = await ctx.tool("hub.lookup", {"q": event.text()})  # raises ToolError on a failure
    await ctx.reply(ctx.thread(event), {"by": ctx.agent_id, "found": found})


async def agent(address: str) -> None:
    a = loom.Agent("traced", topics=["svc.traced"], capabilities=[upper], on_event=_answer, address=address)
    await a.start()
    print(f"ready {a._transport.stream_kind}", flush=True)
    await a.run()


async def runtime(requests: int) -> dict:
    async with loom.Loom(name="otlp-peer", native_tools=()) as rt:
        rt.tools.register(lookup)
        await loom.Agent("answerer", topics=["svc.answer"], on_event=_answer).start()
        t0 = time.perf_counter()
        for i in range(requests):
            reply = await loom.request_reply("svc.answer", f"question {i}", timeout=5)
            assert reply is not None and reply.json()["found"]["q"] == f"question {i}", reply
        seconds = time.perf_counter() - t0
        # The loom.* counters are read from the live runtime's parts: stay up for a periodic export
        # (and on a machine too busy for one in that time, collect once more before stopping).
        await asyncio.sleep(2.5 * int(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "0")) / 1000)
        await asyncio.to_thread(_flush_metrics)
        return {"seconds": seconds, "requests": requests}


def _flush_metrics() -> None:
    from opentelemetry import metrics

    provider = metrics.get_meter_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush(5000)


def main() -> None:
    collector = loom.telemetry.init_telemetry()
    mode = sys.argv[1]
    if mode == "agent":
        asyncio.run(agent(sys.argv[2]))
    else:
        result = asyncio.run(runtime(200 if mode == "busy" else 1))
        result["handle_spans"] = sum(1 for s in collector.spans() if s.name == "handle")
        print(json.dumps(result), flush=True)
    t0 = time.perf_counter()
    loom.telemetry.disable_telemetry()  # flushes the spans (the exporter's own timeout bounds it)
    print(json.dumps({"flush_seconds": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
    main()
