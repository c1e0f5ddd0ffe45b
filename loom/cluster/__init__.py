"""Loom on NATS: many runtimes (notebooks, scripts, ``loom worker`` processes) share one bus.

- :class:`ClusterLink` (``rt.join_cluster(url)`` or ``Loom(cluster=url)``): exported patterns go
  to NATS, imported ones come back, each event crossing once (docs/scale-out.md).
- :class:`ReplicaGroup` (``await rt.cluster.replicate(agent_id)``): the same agent in N runtimes
  shares its events through a NATS queue group: each event is handled once across the group.
- :class:`DurableFeeds`: a subscription with BACKGROUND QoS (or ``durable=True``), an agent's mailbox
  above all, is fed by a durable JetStream consumer: at-least-once, acked after the handler returns,
  redelivered after a crash, duplicates suppressed by id; replicas of one agent share the consumer.
- :class:`DurableExport` / :class:`DurableConsumer`: the stream's sending side (acked, re-sent with
  the event id as ``Nats-Msg-Id``) and a consumer that publishes what it pulls on the local bus.
- :class:`ClusterDirectory`: agents and capabilities of every runtime in each runtime's directories
  (a JetStream key-value bucket with heartbeats), remote capabilities callable as tools.
- :class:`NatsServer`: a local nats-server from the packaged binary (``loom nats-server``, tests).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from loom.cluster.codec import NotALoomEvent
from loom.cluster.connection import ClusterUnavailable
from loom.cluster.directory import ClusterDirectory
from loom.cluster.durable import DurableConsumer, DurableExport
from loom.cluster.export import MessageTooLarge
from loom.cluster.feed import DurableFeeds, Feed
from loom.cluster.link import ClusterLink
from loom.cluster.replicas import ReplicaGroup
from loom.cluster.server import NatsServer, NatsServerError, find_nats_server

__all__ = [
    "ClusterDirectory",
    "ClusterLink",
    "ClusterUnavailable",
    "DurableConsumer",
    "DurableExport",
    "DurableFeeds",
    "Feed",
    "MessageTooLarge",
    "NatsServer",
    "NatsServerError",
    "NotALoomEvent",
    "ReplicaGroup",
    "build_link",
    "find_nats_server",
]


def build_link(
    servers: str | list[str],
    export: Iterable[str],
    import_: Iterable[str],
    *,
    bus: Any,
    instruments: Any,
    spawn: Any,
    directory: Any,
    tools: Any,
    share_directory: bool = True,
    durable: Iterable[str] = (),
    stream: str = "LOOM",
    stream_replicas: int = 1,
    stream_max_age: float = 7 * 86400.0,
    heartbeat_s: float = 2.0,
    ack_wait: float = 30.0,
    max_deliver: int = 20,
    window: int = 16,
    **options: Any,
) -> ClusterLink:
    """The link a runtime adopts (:meth:`loom.Loom.join_cluster`), with its planned parts.

    Args:
        share_directory: publish this runtime's agents and capabilities, and mirror the others'.
        durable: exported patterns that go through the JetStream stream ``stream`` (at-least-once;
            consumers use :meth:`ClusterLink.consume`).
        stream_replicas: copies of the stream's data in a NATS cluster (3 survives one node lost).
        stream_max_age: seconds the stream keeps an event when this runtime creates it (0: no limit).
        heartbeat_s: how often the directory entry is refreshed (it expires after 3 missed beats).
        ack_wait, max_deliver, window: of the consumers that feed durable subscriptions (BACKGROUND
            QoS or ``durable=True``; :mod:`loom.cluster.feed`): seconds before an event not done is
            delivered again, deliveries at most, events handed over and not done at a time.
        options: ``node`` and ``nats.connect`` options (credentials, TLS, ``pending_size``...).
    """
    parts = {"bus": bus, "instruments": instruments, "spawn": spawn}
    link = ClusterLink(servers, export=export, import_=import_, **parts, **options)
    link.stream_max_age = stream_max_age
    durable = list(durable)
    if durable:
        link.planned.append(DurableExport(link, durable, stream=stream, replicas=stream_replicas))
    feed = {"ack_wait": ack_wait, "max_deliver": max_deliver, "window": window}
    link.planned.append(DurableFeeds(link, stream=stream, replicas=stream_replicas, **feed))
    if share_directory:
        link.planned.append(ClusterDirectory(link, directory, tools, heartbeat_s=heartbeat_s))
    return link
