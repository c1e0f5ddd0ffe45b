"""The directory across the cluster: every runtime's agents and capabilities in each runtime.

Each runtime writes one entry, keyed by its node id, to the JetStream key-value bucket
``loom_directory``: its agents (id, topics, capabilities) and its agents' capabilities (name,
version, description, schema). It rewrites the entry when something changes and at least every
``heartbeat_s`` (the heartbeat), and deletes it when it leaves. Each runtime watches the bucket and
mirrors the other entries into its :class:`~loom.agents.directory.AgentDirectory` (``location=
"remote"``) and its :class:`~loom.tools.registry.ToolRegistry` (a :class:`ClusterTool` per remote
capability, so ``rt.tools.invoke`` reaches it like a bridged one). An entry not refreshed for three
heartbeats is dropped (the runtime died; the bucket's own TTL cleans up storage later).

Only agents' capabilities cross (provider ``local``): native tools (``shell.exec``, files) stay
private to their runtime. A capability call is a NATS request to ``_loom.tool.<node>``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from loom.agents.directory import AgentInfo
from loom.cluster.connection import settle
from loom.errors import ToolError
from loom.tools.result import ErrorCode

if TYPE_CHECKING:
    from loom.agents.directory import AgentDirectory
    from loom.cluster.link import ClusterLink
    from loom.tools.registry import ToolRegistry

__all__ = ["BUCKET", "ClusterDirectory", "ClusterTool"]

log = logging.getLogger("loom.cluster")

BUCKET = "loom_directory"


def _beat_of(data: dict[str, Any], default: float) -> float:
    try:
        return max(0.05, float(data.get("heartbeat_s", default)))
    except (TypeError, ValueError):
        return default


class ClusterTool:
    """A capability of an agent in another runtime: invoking it asks that runtime over NATS."""

    provider = "remote"

    def __init__(self, link: ClusterLink, node: str, desc: dict[str, Any]) -> None:
        self.link = link
        self.node = node
        self.name = desc["name"]
        self.version = desc.get("version") or "1.0"
        self.description = desc.get("description") or f"capability of {desc.get('owner')} in {node}"
        self.schema = desc.get("schema") or {"type": "object"}

    async def execute(self, args: dict[str, Any]) -> Any:
        from nats.errors import NoRespondersError

        body = json.dumps({"name": self.name, "version": self.version, "args": args}).encode()
        attrs = {"loom.tool": self.name, "loom.cluster.node": self.node}
        with self.link.instruments.span("cluster.tool", attrs) as span:
            headers: dict[str, str] = {}
            span.inject(headers)  # the answering runtime continues this trace
            try:
                msg = await self.link.nc.request(f"_loom.tool.{self.node}", body, timeout=3600, headers=headers or None)
            except NoRespondersError:
                raise ToolError(ErrorCode.PROVIDER_UNAVAILABLE, self.name, f"runtime {self.node} is gone") from None
            except Exception as exc:  # noqa: BLE001 - disconnected, closed: the provider is unreachable
                raise ToolError(ErrorCode.PROVIDER_UNAVAILABLE, self.name, f"{type(exc).__name__}: {exc}") from None
        reply = json.loads(msg.data)
        if reply.get("ok"):
            return reply.get("output")
        err = reply.get("error") or {}
        raise ToolError(
            err.get("code") or ErrorCode.CAPABILITY_ERROR, self.name, err.get("message") or "failed", err.get("details")
        )


class ClusterDirectory:
    """Publishes this runtime's agents and capabilities and mirrors the other runtimes' ones."""

    def __init__(
        self, link: ClusterLink, directory: AgentDirectory, tools: ToolRegistry, *, heartbeat_s: float = 2.0
    ) -> None:
        self.link = link
        self.directory = directory
        self.tools = tools
        self.heartbeat_s = heartbeat_s
        self.nodes: dict[str, dict[str, Any]] = {}  # node -> its last entry (with "seen", local time)
        self._mine: dict[str, tuple[str, ...]] = {}  # node -> agent ids this directory registered for it
        self._kv: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._serving: Any = None
        self._last = ""
        self._last_put = 0.0

    async def start(self) -> None:
        from nats.js.api import KeyValueConfig

        js = self.link.nc.jetstream()
        ttl = max(30.0, self.heartbeat_s * 10)
        try:
            self._kv = await js.create_key_value(KeyValueConfig(bucket=BUCKET, ttl=ttl, history=1))
        except Exception:  # noqa: BLE001 - exists with another config (another runtime made it): use it
            self._kv = await js.key_value(BUCKET)
        self._serving = await self.link.nc.subscribe(f"_loom.tool.{self.link.node}", cb=self._on_call)
        await settle(self.link.nc)  # calls are served before the entry that invites them is out
        await self._publish(force=True)
        spawn = self.link.spawn
        self._tasks = [
            spawn(self._beat(), name=f"loom.cluster.directory.beat:{self.link.node}"),
            spawn(self._watch(), name=f"loom.cluster.directory.watch:{self.link.node}"),
        ]

    # -- this runtime's entry ------------------------------------------------------------
    def _entry(self) -> str:
        agents = [
            {"agent_id": a.agent_id, "topics": list(a.topics), "capabilities": list(a.capabilities)}
            for a in self.directory.all()
            if a.location == "local"
        ]
        tools = [
            {k: d[k] for k in ("name", "version", "description", "schema", "owner")}
            for d in self.tools.list_tools()
            if d["provider"] == "local"  # agents' capabilities only: native tools stay private
        ]
        groups = sorted({p for patterns in self.link.groups.values() for p in patterns})
        durable = list(self.link.feeds.patterns) if self.link.feeds is not None else []
        entry = {"agents": agents, "tools": tools, "groups": groups, "durable": durable}
        return json.dumps(entry, sort_keys=True, default=str)

    async def _publish(self, force: bool = False) -> None:
        body = self._entry()
        now = time.monotonic()
        if body == self._last and not force and now - self._last_put < self.heartbeat_s:
            return
        self._last, self._last_put = body, now
        entry = {"node": self.link.node, "ts": time.time(), "heartbeat_s": self.heartbeat_s, "entry": json.loads(body)}
        stamped = json.dumps(entry)
        await self._kv.put(self.link.node, stamped.encode())

    async def _beat(self) -> None:
        # Every 100 ms: publish a changed entry at once (convergence), an unchanged one once per heartbeat.
        while True:
            await asyncio.sleep(min(0.1, self.heartbeat_s))
            try:
                await self._publish()
            except Exception as exc:  # noqa: BLE001 - disconnected: the next beat tries again
                log.debug("directory heartbeat failed: %s", exc)
            self._expire()

    # -- the other runtimes --------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            reconnects = self.link.conn.reconnects
            try:
                watcher = await self._kv.watchall()
            except Exception as exc:  # noqa: BLE001 - JetStream not reachable yet (failover): retry
                log.debug("directory watch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            try:
                while self.link.conn.reconnects == reconnects:  # a new connection needs a new watcher
                    try:
                        entry = await watcher.updates(timeout=self.heartbeat_s)
                    except Exception:  # noqa: BLE001, S112 - nats' TimeoutError: check the connection, go on
                        continue
                    if entry is not None:
                        self._apply(entry)
            finally:
                try:
                    await asyncio.wait_for(watcher.stop(), 2.0)
                except Exception:  # noqa: BLE001, S110 - the old connection's consumer is gone anyway
                    pass

    def _apply(self, entry: Any) -> None:
        node = entry.key
        if node == self.link.node:
            return
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self._forget(node)
            return
        try:
            data = json.loads(entry.value)
        except ValueError:
            return
        beat = _beat_of(data, self.heartbeat_s)
        if time.time() - float(data.get("ts", 0)) > 3 * beat:
            return  # an old entry of a runtime that died (the bucket still holds it)
        data["seen"] = time.monotonic()
        self.nodes[node] = data
        self._mirror(node, data["entry"])

    def _regroup(self) -> None:
        # Subjects queue groups serve, here or in any runtime: exporters send them one event per message.
        mine = [p for patterns in self.link.groups.values() for p in patterns]
        theirs = [p for d in self.nodes.values() for p in d["entry"].get("groups", ())]
        self.link.grouped.replace(mine + theirs)
        # Subjects durable subscriptions anywhere are fed from: exporters send them acked, by event id.
        durable = [p for d in self.nodes.values() for p in d["entry"].get("durable", ())]
        sender = self.link.durable_sender() if durable else self.link.durable_export
        if sender is not None:
            sender.theirs.replace(durable)

    def _mirror(self, node: str, entry: dict[str, Any]) -> None:
        self._regroup()
        ids: list[str] = []
        now_ms = time.time_ns() // 1_000_000
        for a in entry.get("agents", ()):
            known = self.directory.get(a["agent_id"])
            if known is not None and known.location == "local":
                continue  # a replica of an agent of this runtime: the local entry stands
            info = AgentInfo(
                agent_id=a["agent_id"],
                topics=tuple(a["topics"]),
                capabilities=tuple(a["capabilities"]),
                metadata={"node": node},
                location="remote",
                last_heartbeat_ms=now_ms,
            )
            self.directory.register(info)
            ids.append(a["agent_id"])
        for gone in set(self._mine.get(node, ())) - set(ids):
            self._unregister(gone, node)
        self._mine[node] = tuple(ids)
        owner = f"cluster:{node}"
        names = {d["name"] for d in entry.get("tools", ())}
        for name in self.tools.names():
            if name not in names and self.tools.describe(name)["owner"] == owner:
                self.tools.unregister(name)
        for desc in entry.get("tools", ()):
            current = self.tools.get(desc["name"])
            if current is not None and not isinstance(current, ClusterTool):
                continue  # this runtime has its own tool of that name: it wins
            if isinstance(current, ClusterTool) and current.node == node:
                continue
            self.tools.register(ClusterTool(self.link, node, desc), provider="remote", owner=owner)

    def _unregister(self, agent_id: str, node: str) -> None:
        info = self.directory.get(agent_id)
        if info is not None and info.location == "remote" and info.metadata.get("node") == node:
            self.directory.unregister(agent_id)

    def _forget(self, node: str) -> None:
        self.nodes.pop(node, None)
        self._regroup()
        for agent_id in self._mine.pop(node, ()):
            self._unregister(agent_id, node)
        self.tools.unregister_owner(f"cluster:{node}")

    def _expire(self) -> None:
        # Three of the *writer's* heartbeats: runtimes may beat at different rates.
        now = time.monotonic()
        for node in [n for n, d in self.nodes.items() if d["seen"] < now - 3 * _beat_of(d, self.heartbeat_s)]:
            log.info("cluster node %s missed three heartbeats: its agents leave the directory", node)
            self._forget(node)

    # -- capability calls from other runtimes --------------------------------------------
    async def _on_call(self, msg: Any) -> None:
        self.link.spawn(self._answer(msg), name="loom.cluster.tool-call")  # a slow tool must not hold the others

    async def _answer(self, msg: Any) -> None:
        try:
            req = json.loads(msg.data)
            name = req["name"]
            desc = self.tools.describe(name) if name in self.tools else None
            if desc is None or desc["provider"] != "local":
                reply = {"ok": False, "error": {"code": ErrorCode.NOT_FOUND, "message": f"no capability {name!r} here"}}
            else:
                with self.link.instruments.span("cluster.tool.serve", {"loom.tool": name}, parent=msg.headers or None):
                    result = await self.tools.invoke(name, req.get("args") or {}, caller=f"cluster:{msg.subject}")
                if result.error is None:
                    reply = {"ok": True, "output": result.output}
                else:
                    e = result.error
                    reply = {"ok": False, "error": {"code": e.code, "message": e.message, "details": e.details}}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": {"code": ErrorCode.INVALID_PARAMS, "message": f"bad call: {exc}"}}
        try:
            await msg.respond(json.dumps(reply, default=str).encode())
        except Exception as exc:  # noqa: BLE001 - the caller's connection is gone
            log.debug("capability reply lost: %s", exc)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a part that cannot finish must not hold the runtime's stop
            await asyncio.wait(self._tasks, timeout=3.0)
        self._tasks = []
        if self._serving is not None:
            try:
                await asyncio.wait_for(self._serving.unsubscribe(), 2.0)
            except Exception:  # noqa: BLE001, S110 - connection already gone
                pass
        if self._kv is not None:
            try:
                await asyncio.wait_for(self._kv.delete(self.link.node), 2.0)  # leave at once, not after 3 beats
            except Exception:  # noqa: BLE001, S110 - the others expire the entry after three heartbeats
                pass
        for node in list(self.nodes):
            self._forget(node)
