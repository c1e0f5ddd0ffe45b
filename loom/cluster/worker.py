"""``loom worker --cluster URL module:agent``: one replica of an agent, in a process of its own.

The worker is a runtime joined to the cluster (everything exported and imported, so the agent's
replies, requests and tool calls cross as they would in one process) whose agent receives its
topics as one member of the queue group ``loom.<agent id>`` — or, with ``--durable``, through the
shared JetStream consumer ``loom-<agent id>``, each message acked only after the agent's handler
returned for it. Start more workers to scale a slow agent; stop one and the others take over.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import signal
import sys
import time
from typing import Any

from loom.errors import UsageError

__all__ = ["load_agent", "run_worker", "serve_agent"]


def load_agent(spec: str) -> Any:
    """The ``loom.Agent`` named by ``module:attribute`` (an Agent, or a function returning one).

    Raises:
        UsageError: not ``module:attribute``, the module or attribute is missing, or it is no Agent.
    """
    from loom.sdk.agent import Agent

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"name the agent as module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:  # like `python -m`: modules next to the caller are found
        sys.path.insert(0, os.getcwd())
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot load {spec!r}: {exc}") from None
    if not isinstance(obj, Agent) and callable(obj):
        obj = obj()
    if not isinstance(obj, Agent):
        raise UsageError(f"{spec!r} is {type(obj).__name__}, not a loom.Agent (or a function returning one)")
    return obj


async def serve_agent(rt: Any, agent: Any, *, durable: bool = False, **consumer_options: Any) -> Any:
    """Start ``agent`` in ``rt`` (joined to a cluster) as a replica; returns the ReplicaGroup or DurableConsumer."""
    link = rt.cluster
    if link is None:
        raise UsageError("serve_agent needs a runtime that joined a cluster")
    if not agent.topics:
        raise UsageError(f"agent {agent.agent_id!r} has no topics to serve")
    if not durable:
        await agent.start()
        return await link.replicate(agent.topics, group=f"loom.{agent.agent_id}")
    waiting: dict[str, asyncio.Future[None]] = {}
    handler = agent.on_event

    async def on_event(ctx: Any, topic: str, event: Any) -> None:
        # The durable consumer acks a message when the agent's handler is done with it: it waits here.
        try:
            result = handler(ctx, topic, event) if handler is not None else None
            if inspect.isawaitable(result):
                await result
        finally:
            fut = waiting.pop(event.id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def hand_over(topic: str, event: Any) -> None:
        fut = asyncio.get_running_loop().create_future()
        waiting[event.id] = fut
        try:
            if await link.deliver(topic, event):
                await asyncio.wait_for(fut, consumer_options.get("ack_wait", 30.0))
        finally:
            waiting.pop(event.id, None)

    agent.on_event = on_event
    await agent.start()
    return await link.consume(agent.topics, name=f"loom-{agent.agent_id}", handler=hand_over, **consumer_options)


async def run_worker(
    url: str, spec: str, *, durable: bool = False, name: str | None = None, ack_wait: float = 30.0
) -> None:
    """The ``loom worker`` command (``loom/cli.py`` runs it): until SIGINT/SIGTERM; prints one JSON
    line when ready and one when stopped.

    Raises:
        UsageError: the agent cannot be loaded. ClusterUnavailable: no server answered.
    """
    from loom.runtime import Loom

    agent = load_agent(spec)
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Loom(name=name or f"worker-{agent.agent_id}", native_tools=()) as rt:
        await rt.join_cluster(url)
        part = await serve_agent(rt, agent, durable=durable, **({"ack_wait": ack_wait} if durable else {}))
        ready = {"ready": True, "node": rt.cluster.node, "agent": agent.agent_id, "pid": os.getpid()}
        cpu0 = time.process_time()  # what serving costs, without the imports and the start
        print(json.dumps({**ready, "mode": "durable" if durable else "queue"}), flush=True)
        await stop.wait()
        cpu = time.process_time() - cpu0
        print(
            json.dumps({"stopped": True, "handled": agent.core.handled, "cpu_s": cpu, "part": repr(part)}), flush=True
        )
