"""``loom worker --cluster URL module:agent``: one replica of an agent, in a process of its own.

The worker is a runtime joined to the cluster (everything exported and imported, so the agent's
replies, requests and tool calls cross as they would in one process) whose agent receives its
topics as one member of the queue group ``loom.<agent id>`` — or, with ``--durable`` (or an agent
with BACKGROUND QoS), through its durable mailbox: the JetStream consumer every replica of the agent
shares, each event acked only after the agent's handler returned for it (:mod:`loom.cluster.feed`).
Start more workers to scale a slow agent; stop one and the others take over.
"""

from __future__ import annotations

import asyncio
import importlib
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


async def serve_agent(rt: Any, agent: Any, *, durable: bool = False) -> Any:
    """Start ``agent`` in ``rt`` (joined to a cluster) as a replica; returns its ReplicaGroup, or the
    :class:`~loom.cluster.feed.Feed` of its durable mailbox (``durable``, or an agent with BACKGROUND QoS).

    Raises:
        UsageError: ``rt`` has not joined a cluster, or the agent has no topics the cluster carries.
    """
    from loom.events.qos import QoS

    link = rt.cluster
    if link is None:
        raise UsageError("serve_agent needs a runtime that joined a cluster")
    if not agent.topics:
        raise UsageError(f"agent {agent.agent_id!r} has no topics to serve")
    if not (durable or agent.durable or (agent.durable is None and agent.qos is QoS.BACKGROUND)):
        await agent.start()
        return await link.replicate(agent.topics, group=f"loom.{agent.agent_id}")
    agent.durable = True  # its mailbox is fed by the consumer every replica of it shares (loom.cluster.feed)
    await agent.start()
    feeds = link.feeds
    feed = next((f for f in feeds.feeds.values() if f.sub is agent.core.mailbox), None) if feeds else None
    if feed is None:  # refused at once (no JetStream: the error says), or nothing to feed
        why = link.conn.last_error if "durable feed" in link.conn.last_error else ""
        why = why or f"none of its topics {list(agent.topics)} is both exported and imported"
        raise UsageError(f"agent {agent.agent_id!r}: its durable mailbox cannot be served: {why}")
    await feed.started.wait()
    if feed.error:
        raise UsageError(f"agent {agent.agent_id!r}: its durable mailbox cannot be served: {feed.error}")
    return feed


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
        await rt.join_cluster(url, ack_wait=ack_wait)
        part = await serve_agent(rt, agent, durable=durable)
        ready = {"ready": True, "node": rt.cluster.node, "agent": agent.agent_id, "pid": os.getpid()}
        cpu0 = time.process_time()  # what serving costs, without the imports and the start
        print(json.dumps({**ready, "mode": "durable" if durable else "queue"}), flush=True)
        await stop.wait()
        cpu = time.process_time() - cpu0
        print(
            json.dumps({"stopped": True, "handled": agent.core.handled, "cpu_s": cpu, "part": repr(part)}), flush=True
        )
