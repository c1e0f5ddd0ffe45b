"""Loom: the composition root.

A :class:`Loom` builds its parts, gives each the narrow things it needs (the bus, the tool
registry, the directory, a spawn function), starts them in order and closes them in reverse, and
owns every task they start. It runs on whatever loop is running: ``asyncio.run``'s in a script
(see :func:`run`), the kernel's own loop in a notebook. Library code never starts or nests a loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from loom._supervisor import Supervisor
from loom.agents.directory import AgentDirectory, CapabilityDirectory
from loom.agents.link import LocalLink
from loom.agents.runtime import AgentRuntime
from loom.agents.state import SQLiteStateStore, StateStore
from loom.errors import NoRuntime, StopFailed, UsageError
from loom.events.bus import EventBus
from loom.telemetry.seam import Instruments
from loom.tools.mcp import McpManager, parse_mcp_config
from loom.tools.native import DEFAULT_NATIVE, Workspace
from loom.tools.native import native_tools as make_native_tools
from loom.tools.registry import ToolRegistry

__all__ = ["Component", "Loom", "current"]

log = logging.getLogger("loom")
T = TypeVar("T")

_running: list[Loom] = []  # runtimes started in this process, most recent last


class Component(Protocol):
    """A part the runtime starts and stops (see :meth:`Loom.add_component`); ``async start()`` optional."""

    name: str

    async def aclose(self) -> None:
        """Release everything the part holds. Must not raise for a part that never started."""
        ...


class Loom:
    """The runtime: one per notebook or script, usually.

    Use ``async with Loom() as rt:`` or ``await rt.start()`` / ``await rt.stop()``.

    Args:
        name: a label used in task names and reprs.
        max_topics: topics that keep their own counters on the bus (see :class:`EventBus`).
        state: where agents' persistent state lives: a path to a SQLite file, a
            :class:`StateStore`, or ``None`` for memory only.
        workspace: the directory native tools are confined to (default: the current directory).
        native_tools: which native tools to register (default ``shell.exec``, ``fs.read``,
            ``weather.get``, ``web.search``; ``fs.write`` and ``fs.list`` are opt-in; ``()`` for none).
        tool_options: options of the native tools (see :func:`loom.tools.native.native_tools`).
        mcp_servers: MCP servers to connect at start (``mcpServers`` JSON, text or parsed); when
            omitted, ``$LOOM_MCP_SERVERS`` is used if set.
        record: a SQLite file to record bus traffic into (``rt.recorder``, a :class:`loom.store.Recorder`).
        record_topics: the patterns ``record`` keeps (default everything).
        cluster: NATS server URL(s) to join at start (see :meth:`join_cluster`; needs the ``nats`` extra).
        cluster_topics: the patterns both exported to and imported from the cluster (default everything).

    Attributes:
        bus: the :class:`EventBus`.
        instruments: the :class:`~loom.telemetry.Instruments` every part reports through (spans, notes, metrics).
        agents: the :class:`AgentRuntime` (``rt.agents[id]`` is a running agent's record).
        directory: the :class:`AgentDirectory` of every agent, local or bridged.
        capabilities: the :class:`CapabilityDirectory` (name:version → descriptor) of ``tools``, kept current.
        tools: the :class:`ToolRegistry` every tool invocation goes through.
        mcp: the :class:`~loom.tools.mcp.McpManager` (``await rt.mcp.add("time", command=...)``).
        link: the :class:`~loom.agents.link.LocalLink` where this process's agents touch bus, tools, supervisor.
        bridge: the :class:`~loom.bridge.server.BridgeServer` once :meth:`start_bridge` ran, else ``None``.
    """

    def __init__(
        self,
        *,
        name: str = "loom",
        max_topics: int = 10_000,
        state: str | Path | StateStore | None = None,
        workspace: str | Path | None = None,
        native_tools: Iterable[str] | None = None,
        tool_options: dict[str, Any] | None = None,
        mcp_servers: Any = None,
        record: str | Path | None = None,
        record_topics: Iterable[str] = (">",),
        cluster: str | list[str] | None = None,
        cluster_topics: Iterable[str] = (">",),
    ) -> None:
        if not isinstance(name, str) or not name:
            raise UsageError(f"Loom name must be a non-empty str, got {name!r}")
        self.name = name
        store = SQLiteStateStore(state) if isinstance(state, str | Path) else state
        if store is not None and not isinstance(store, StateStore):
            raise UsageError(f"state must be a path or a StateStore, got {state!r}")
        mcp_config = parse_mcp_config(mcp_servers) if mcp_servers is not None else None
        self._state: Literal["created", "running", "stopping", "stopped"] = "created"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started_at = 0.0
        self._supervisor = Supervisor(f"loom[{name}]")
        self._components: list[Any] = []  # in start order; closed in reverse
        self.instruments = Instruments()  # the one instrumentation point every part reports through
        bus = EventBus(supervisor=self._supervisor, max_topics=max_topics, instruments=self.instruments)
        self.bus = self._adopt(bus, "bus")
        rec = None
        if record is not None:  # the event log's modules load only when recording
            from loom.store import Recorder

            rec = Recorder(self.bus, record, record_topics, spawn=self._supervisor.spawn)
        self.recorder = rec and self._adopt(rec, "recorder", rec.start)  # adopted here: closes just before the bus
        self.tools = self._adopt(ToolRegistry(self.instruments, supervisor=self._supervisor), "tools")
        self.capabilities = CapabilityDirectory()
        self.tools.on_change(lambda: self.capabilities.refresh_from(self.tools))
        self.workspace = Workspace(workspace if workspace is not None else Path.cwd())
        names = DEFAULT_NATIVE if native_tools is None else tuple(native_tools)
        for tool in make_native_tools(self.workspace, names, **(tool_options or {})):
            self.tools.register(tool, provider="native")
        mcp = McpManager(self.tools, self._supervisor.spawn, mcp_config)
        self.mcp = self._adopt(mcp, "mcp", mcp.start)
        self.directory = AgentDirectory()
        self.link = LocalLink(self.bus, self.tools, self._supervisor)  # where local agents touch the bus
        self.agents = self._adopt(AgentRuntime(self.link, store=store, directory=self.directory), "agents")
        self.bridge: Any = None  # the BridgeServer, once start_bridge() ran
        self.llm: Any = None  # the ModelRouter, once add_llm() ran
        self.cluster: Any = None  # the ClusterLink, once joined (cluster= or join_cluster())
        if cluster is not None:  # adopted last: it closes first, before the agents it serves
            topics = list(cluster_topics)
            link = self._cluster_link(cluster, topics, topics)
            self.cluster = self._adopt(link, "cluster", link.start)

    def _adopt(self, component: T, name: str, start: Callable[[], Awaitable[Any]] | None = None) -> T:
        if not callable(getattr(component, "aclose", None)):
            raise UsageError(f"a component needs an async aclose(), {component!r} has none")
        self._components.append((name, component, start))
        return component

    def _drop(self, component: Any) -> None:
        self._components = [entry for entry in self._components if entry[1] is not component]

    async def add_component(self, component: T, *, name: str | None = None) -> T:
        """Make ``component`` part of this runtime, after the parts it has: its ``start()`` (if any) runs
        now when the runtime runs, else at :meth:`start`; its ``aclose()`` at :meth:`stop`, before the parts
        added earlier. Returns the component. One whose start fails is closed and not kept.

        Raises:
            UsageError: no ``aclose``, or the runtime is stopping or stopped. Whatever its ``start()`` raises.
        """
        if self._state in ("stopping", "stopped"):
            raise UsageError(f"runtime {self.name!r} is {self._state}: it takes no new parts")
        start = getattr(component, "start", None)
        self._adopt(component, name or getattr(component, "name", type(component).__name__), start)
        if self._state == "running" and start is not None:
            try:
                await start()
            except BaseException:
                self._drop(component)
                await component.aclose()  # type: ignore[attr-defined]
                raise
        return component

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``created``, ``running``, ``stopping`` or ``stopped``."""
        return self._state

    @property
    def running(self) -> bool:
        return self._state == "running"

    async def start(self) -> Loom:
        """Start on the running loop and become :func:`current`; start the parts in order (the
        configured MCP servers connect: one that fails is logged and skipped). Idempotent while running.

        Raises:
            UsageError: the runtime was already stopped (create a new one).
        """
        if self._state == "running":
            return self
        self._begin()
        try:
            for _, _, start in list(self._components):
                if start is not None:
                    await start()
        except BaseException:
            await self.stop()
            raise
        return self

    def start_nowait(self) -> Loom:
        """:meth:`start` for synchronous callers on the running loop (e.g. a notebook magic); parts
        with start-up work (MCP servers, the recorder) start in the background.

        Raises:
            UsageError: already stopped. RuntimeError: no running event loop in this thread.
        """
        if self._state == "running":
            return self
        self._begin()
        for name, _, start in self._components:  # the same starts as start(), in the background
            if start is not None:
                self.spawn(start(), name=f"loom.{name}.start")
        return self

    def _begin(self) -> None:
        if self._state != "created":
            raise UsageError(f"runtime {self.name!r} is {self._state}; create a new Loom to start again")
        self._loop = asyncio.get_running_loop()
        self._started_at = time.monotonic()
        self._state = "running"
        _running.append(self)

    async def stop(self) -> None:
        """Stop: whatever waits on the runtime fails at once with RuntimeStopped (requests, tool
        calls), then the parts close in reverse order of start (the bridge, agents with their
        ``on_shutdown``, MCP servers, tools, the bus), then every owned task is cancelled and
        awaited. A part that fails to close never keeps the others open. Idempotent.

        Raises:
            StopFailed: some parts raised while closing (all of them, in closing order).
        """
        if self._state in ("stopping", "stopped"):
            return
        self._state = "stopping"
        if self in _running:  # no longer current() as soon as stopping begins
            _running.remove(self)
        errors: list[Exception] = []
        try:
            self._supervisor.stop_waiters()
            for name, component, _ in reversed(self._components):
                try:
                    await component.aclose()
                except Exception as exc:  # noqa: BLE001 - collected: the others still close
                    log.error("closing %s of runtime %s failed", name, self.name, exc_info=exc)
                    errors.append(exc)
            await self._supervisor.aclose()
        finally:
            self._state = "stopped"
        if errors:
            raise StopFailed(f"runtime {self.name!r} stopped, but {len(errors)} part(s) failed to close", errors)

    async def __aenter__(self) -> Loom:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- bridge --------------------------------------------------------------------------
    async def start_bridge(
        self,
        host: str = "127.0.0.1",
        port: int = 50051,
        *,
        token: str | None = None,
        force: bool = False,
        **options: Any,
    ) -> Any:
        """Serve the loom.v1 Bridge gRPC service on this runtime's loop; returns the BridgeServer
        (``.port`` is the bound port: pass ``port=0`` for a free one).

        Raises:
            UsageError: a non-loopback host without a token (unless ``force``), or the port cannot be bound.
        """
        from loom.bridge.server import BridgeServer

        if self.bridge is not None:
            raise UsageError(f"the bridge already serves on {self.bridge.address}")
        if self._state != "running":
            raise UsageError(f"runtime {self.name!r} is {self._state}: start it before its bridge")
        server = BridgeServer(
            bus=self.bus,
            tools=self.tools,
            directory=self.directory,
            spawn=self._supervisor.spawn,
            host=host,
            port=port,
            token=token,
            force=force,
            **options,
        )
        self.bridge = await self.add_component(server, name="bridge")
        return server

    async def stop_bridge(self) -> None:
        """Stop serving the bridge (streams closed, port released); :meth:`start_bridge` may run again."""
        server, self.bridge = self.bridge, None
        if server is not None:
            self._drop(server)
            await server.aclose()

    # -- cluster -------------------------------------------------------------------------
    async def join_cluster(
        self, url: str | list[str], *, export: Iterable[str] = (">",), import_: Iterable[str] = (">",), **options: Any
    ) -> Any:
        """Share this runtime's bus through NATS (docs/scale-out.md): events on ``export`` patterns go to the
        cluster, events from it on ``import_`` patterns are published here. ``options`` go to
        :class:`loom.cluster.ClusterLink` (``node``, ``durable``, ``directory``) and on to ``nats.connect``
        (credentials, TLS). Returns the link (also ``rt.cluster``).

        Raises:
            UsageError: already joined. ClusterUnavailable: no server answered (the message says how to start one).
        """
        if self.cluster is not None:
            raise UsageError(f"runtime {self.name!r} already joined the cluster ({self.cluster!r})")
        link = self._cluster_link(url, export, import_, **options)
        self.cluster = await self.add_component(link, name="cluster")
        return link

    async def leave_cluster(self) -> None:
        """Leave the cluster (what was exported is flushed, the link drained and closed; durable
        subscriptions give back what they hold); :meth:`join_cluster` may run again. Idempotent."""
        link, self.cluster = self.cluster, None
        if link is not None:
            self._drop(link)
            await link.aclose()

    def _cluster_link(self, url: Any, export: Iterable[str], import_: Iterable[str], **options: Any) -> Any:
        from loom.cluster import build_link  # the nats extra loads only for a runtime that joins

        parts = {"bus": self.bus, "instruments": self.instruments, "spawn": self._supervisor.spawn}
        return build_link(url, export, import_, **parts, directory=self.directory, tools=self.tools, **options)

    # -- models --------------------------------------------------------------------------
    async def add_llm(self, *providers: Any, **router_options: Any) -> Any:
        """Give the runtime a :class:`~loom.cognitive.ModelRouter` over ``providers`` (``LLMConfig``\\ s: clients it
        makes and closes at :meth:`stop`; ``LLMClient``\\ s stay the caller's), deciding on ``router.decisions``, and
        the tool ``llm.generate``. A second call replaces the first. Returns the router (also ``rt.llm``).

        Raises:
            UsageError: no providers, two with one name, or a bad router option.
        """
        from loom.cognitive.llm.models import build_router

        if self.llm is not None:
            old, self.llm = self.llm, None
            self._drop(old)
            await old.aclose()
        router, tool = build_router(providers, self.instruments, **router_options)
        self.tools.register(tool, provider="native")
        self.llm = await self.add_component(router, name="llm")
        return router

    async def replay(self, log: Any, **options: Any) -> Any:
        """Re-publish a recorded event log onto the bus: :func:`loom.store.replay` (speed, topics, until)."""
        from loom.store import replay

        return await replay(self.bus, log, **options)

    # -- tasks ---------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run ``coro`` as a task owned by this runtime (cancelled and awaited by :meth:`stop`).

        Raises:
            RuntimeStopped: the runtime is stopped.
        """
        return self._supervisor.spawn(coro, name=name)

    @property
    def uptime_s(self) -> float:
        """Seconds since start (0 before)."""
        return time.monotonic() - self._started_at if self._started_at else 0.0

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """The runtime's tasks still running."""
        return self._supervisor.tasks

    def __repr__(self) -> str:
        return f"<Loom {self.name!r} {self._state}, {len(self.bus.subscriptions())} subscriptions>"


def current() -> Loom:
    """The runtime most recently started in this process and still running.

    Raises:
        NoRuntime: none is running (``await Loom().start()``, ``%loom start`` or :func:`run`).
    """
    if not _running:
        raise NoRuntime(
            "no Loom runtime is running in this process: start one with `rt = await Loom().start()`, "
            "`%loom start` in a notebook, or loom.run(main) in a script"
        )
    return _running[-1]
