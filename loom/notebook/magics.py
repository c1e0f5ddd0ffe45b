"""``%loom`` / ``%%loom``: the runtime in the kernel's own event loop.

Nothing here blocks the kernel: starting is synchronous (no awaiting needed), and work that
must await (stopping, starting an agent) runs as a task whose handle the magic returns
(``await`` it in a cell to wait).
"""

from __future__ import annotations

import asyncio
import atexit
import sys
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from loom.errors import LoomError, NoRuntime
from loom.notebook.status import Pending, status_of, track

__all__ = ["LoomMagics"]

_INSPECTORS = ("bus", "agents", "context", "traces", "topology")


@magics_class
class LoomMagics(Magics):
    """The ``%loom`` magics (``%loom?`` for help)."""

    _served: _LocalNatsServer | None = None  # the last %loom cluster serve
    _joining: Pending | None = None  # the last %loom cluster URL: rt.cluster is set only once it connected

    @magic_arguments()
    @argument(
        "action",
        choices=["start", "stop", "status", "bridge", "mic", "inspect", "agent", "trace", "cluster"],
        help="what to do",
    )
    @argument(
        "target",
        nargs="*",
        help="inspect: bus|agents|context AGENT|traces|topology; agent: NAME; trace: on|off; mic: stop; "
        "cluster: URL[,URL...]|status|leave|serve",
    )
    @argument(
        "--bridge", nargs="?", const=50051, type=int, default=None, metavar="PORT", help="start: serve the bridge"
    )
    @argument("--state", default=None, metavar="PATH", help="start: SQLite file for agents' persistent state")
    @argument("--name", default="notebook", help="start: runtime name")
    @argument("--port", type=int, default=None, help="bridge: port (50051); cluster serve: client port (a free one)")
    @argument("--token", default=None, help="bridge: required bearer token")
    @argument("--device", type=int, default=None, help="mic: input device index")
    @argument("--wav", default=None, help="mic: read a WAV file instead of a device")
    @argument("--topics", default="", help="agent: comma-separated topic patterns")
    @argument("--export", default=">", metavar="PATTERNS", help="cluster: comma-separated patterns sent to the cluster")
    @argument(
        "--import", dest="import_", default=">", metavar="PATTERNS", help="cluster: comma-separated patterns taken in"
    )
    @argument("--node", default=None, help="cluster: this runtime's node id (default <host>-<random>)")
    @line_cell_magic
    def loom(self, line: str, cell: str | None = None) -> Any:
        """Run Loom inside this kernel.

        %loom start [--bridge [PORT]] [--state PATH]   start the runtime on the kernel's loop
        %loom stop | status
        %loom inspect bus|agents|context AGENT|traces|topology
        %loom bridge [--port P --token T]   serve the gRPC bridge (await the result to wait)
        %loom trace on|off|status   OpenTelemetry spans and metrics (every runtime of this kernel)
        %loom mic [--device N | --wav FILE] | %loom mic stop   the voice pipeline (`voice`), with its panel
        %loom cluster URL[,URL] [--export a.>,b.* --import c.> --node NAME]   share the bus through NATS
        %loom cluster status | leave   the link: server, node, counters, other nodes; leave it (still running)
        %loom cluster serve [--port N]   a local nats-server on 127.0.0.1 until %loom stop (await it: the URL)
        %%loom agent NAME --topics a.b,c.*   (cell defines `async def on_event(ctx, topic, event)`)
        """
        args = parse_argstring(self.loom, line)
        handler = getattr(self, f"_{args.action}")
        try:
            return handler(args, cell)
        except LoomError as exc:  # a clear message, not a traceback
            raise IPythonUsageError(str(exc)) from None

    # -- lifecycle -----------------------------------------------------------------------
    def _start(self, args: Any, cell: str | None) -> Any:
        import loom

        try:
            rt = loom.current()
            print(f"Loom {rt.name!r} is already running", file=sys.stderr)
        except NoRuntime:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                raise IPythonUsageError("%loom start needs a running event loop (a Jupyter kernel)") from None
            rt = loom.Loom(name=args.name, state=args.state).start_nowait()
            previous = self.shell.user_ns.get("rt")
            if previous is None or (isinstance(previous, loom.Loom) and previous.state == "stopped"):
                self.shell.user_ns["rt"] = rt  # a user's own `rt` stays; a stopped runtime's gives way
        display(status_of(rt))
        if args.bridge is not None:
            return self._bridge(args, cell)
        return None

    def _stop(self, args: Any, cell: str | None) -> Pending | None:
        import loom

        try:
            rt = loom.current()
        except NoRuntime:
            print("Loom is not running", file=sys.stderr)
            return None
        return track(f"stopping Loom {rt.name!r}", rt.stop())

    def _status(self, args: Any, cell: str | None) -> Any:
        import loom

        try:
            return status_of(loom.current())
        except NoRuntime:
            print("Loom is not running: %loom start", file=sys.stderr)
            return None

    # -- parts that arrive with later issues ---------------------------------------------
    def _bridge(self, args: Any, cell: str | None) -> Pending | None:
        import loom

        try:
            rt = loom.current()
        except NoRuntime:
            raise IPythonUsageError("start the runtime first: %loom start") from None
        if rt.bridge is not None:
            print(f"the bridge already serves on {rt.bridge.address}", file=sys.stderr)
            return None
        port = next((p for p in (args.bridge, args.port) if p is not None), 50051)

        async def serve() -> str:
            server = await rt.start_bridge("127.0.0.1", port, token=args.token)
            print(f"bridge serving on {server.address}: Agent(..., address={server.address!r})")
            return server.address

        return track(f"bridge on 127.0.0.1:{port}", serve())

    def _mic(self, args: Any, cell: str | None) -> Any:
        import loom

        try:
            rt = loom.current()
        except NoRuntime:
            raise IPythonUsageError("start the runtime first: %loom start") from None
        voice = self.shell.user_ns.get("voice")
        if args.target == ["stop"]:
            if voice is None or not getattr(voice, "running", False):
                print("no voice pipeline is running", file=sys.stderr)
                return None
            return track("stopping the voice pipeline", voice.stop())
        if args.target:
            raise IPythonUsageError("%loom mic [--device N | --wav FILE] | %loom mic stop")
        if voice is not None and getattr(voice, "running", False):
            print("a voice pipeline is already running: %loom mic stop first", file=sys.stderr)
            return None
        try:
            from loom.audio.pcm import read_wav
            from loom.audio.pipeline import VoicePipeline
            from loom.audio.sources import MicSource, WavSource, input_devices
        except ImportError as exc:
            raise IPythonUsageError(
                f"the audio extra is not installed ({exc}): pip install 'loom-notebook[audio]'"
            ) from None
        if args.wav:
            read_wav(args.wav)  # a bad file is said here and now, not from the background
            source: Any = WavSource(args.wav, realtime=True)
        else:
            if not input_devices():
                raise IPythonUsageError(
                    "no audio input device (PortAudio lists none): use %loom mic --wav FILE on this machine"
                )
            source = MicSource(device=args.device)
        from loom.notebook.voice_panel import VoicePanel

        pipeline = VoicePipeline(rt, source=source)
        self.shell.user_ns["voice"] = pipeline
        self.shell.user_ns["voice_start"] = track("voice pipeline", pipeline.start())
        return VoicePanel(pipeline)

    # -- cluster -------------------------------------------------------------------------
    def _cluster(self, args: Any, cell: str | None) -> Pending | None:
        import loom

        try:
            rt = loom.current()
        except NoRuntime:
            raise IPythonUsageError("start the runtime first: %loom start") from None
        if len(args.target) != 1:
            raise IPythonUsageError(
                "%loom cluster URL[,URL...] [--export P --import P --node N] | status | leave | serve"
            )
        what = args.target[0]
        if what == "status":
            return self._cluster_status(rt)
        if what == "leave":
            return track("leaving the cluster", rt.leave_cluster())
        if what == "serve":
            return self._cluster_serve(rt, args.port)
        return self._cluster_join(rt, what, args)

    def _cluster_join(self, rt: Any, url: str, args: Any) -> Pending:
        from loom.cluster.connection import redact, server_list
        from loom.cluster.subjects import check_patterns

        if rt.cluster is not None:
            raise IPythonUsageError(f"runtime {rt.name!r} already joined the cluster ({rt.cluster!r})")
        if self._joining is not None and not self._joining.done():
            raise IPythonUsageError(f"{self._joining.what} is under way: await it (or %loom cluster status)")
        servers = server_list(url)
        export = check_patterns(_split(args.export), "--export")  # bad patterns are said now, not later
        import_ = check_patterns(_split(args.import_), "--import")
        options = {"node": args.node} if args.node else {}
        where = ",".join(map(redact, servers))

        async def join() -> Any:
            try:
                link = await rt.join_cluster(servers, export=export, import_=import_, **options)
            except LoomError as exc:  # no server, already joined, no nats extra: the message, not a traceback
                raise IPythonUsageError(str(exc)) from None
            print(f"joined the cluster at {link.conn.connected_url or where} as node {link.node}")
            return link

        self._joining = track(f"joining the cluster at {where}", join())
        return self._joining

    def _cluster_status(self, rt: Any) -> None:
        link = rt.cluster
        served = self._served
        if served is not None and served.owner is rt and not served.closed:
            state = "running" if served.server.running else "starting"
            print(f"local server: {served.server.url or '(port not known yet)'} ({state})")
        if link is None:
            print(f"Loom {rt.name!r} has not joined a cluster: %loom cluster URL", file=sys.stderr)
            return
        stats = link.stats()
        state = f"connected to {stats['connected_url']}" if stats["connected"] else "not connected (reconnecting)"
        print(
            f"node {stats['node']}: {state}; export {', '.join(link.export_patterns) or 'nothing'}, "
            f"import {', '.join(link.import_patterns) or 'nothing'}"
        )
        always = ("exported", "imported", "disconnects", "reconnects")
        counts = [f"{k} {stats[k]}" for k in always]
        counts += [f"{k} {v}" for k, v in stats.items() if k not in always and type(v) is int and v]
        print(", ".join(counts))
        if stats["last_error"]:
            print(f"last error: {stats['last_error']}")
        nodes = link.nodes()
        others = "; ".join(f"{n} ({', '.join(agents) or 'no agents'})" for n, agents in nodes.items())
        print(f"other nodes: {others or 'none seen yet'}")

    def _cluster_serve(self, rt: Any, port: int | None) -> Pending | None:
        served = self._served
        if served is not None and served.owner is rt and not served.closed:
            print(f"a local server already runs at {served.server.url or '(starting)'}", file=sys.stderr)
            return None
        local = _LocalNatsServer(rt, -1 if port is None else port)
        self._served = local
        self.shell.user_ns["nats_server"] = local.server  # its .url and .pid; %loom stop stops it

        async def serve() -> str:
            try:
                await rt.add_component(local, name="nats-server")
            except LoomError as exc:  # no binary, the port taken, the runtime stopping
                raise IPythonUsageError(str(exc)) from None
            url = local.server.url
            print(f"nats-server on {url} (it stops with %loom stop); join it: %loom cluster {url}")
            return url

        return track(f"nats-server on 127.0.0.1:{'(free port)' if port is None else port}", serve())

    # -- telemetry -----------------------------------------------------------------------
    def _trace(self, args: Any, cell: str | None) -> Any:
        import loom.telemetry

        what = args.target[0] if len(args.target) == 1 else ""
        if what not in ("on", "off", "status"):
            raise IPythonUsageError("%loom trace on|off|status")
        if what == "on":
            collector = loom.telemetry.init_telemetry()
            self.shell.user_ns.setdefault("collector", collector)
            print(f"tracing on: spans in `collector` ({len(collector)} so far); %loom inspect traces to see them")
            return None
        if what == "off":
            loom.telemetry.disable_telemetry()
            print("tracing off (spans collected so far are kept)")
            return None
        state = "on" if loom.telemetry.telemetry_enabled() else "off"
        print(f"tracing {state}")
        return None

    # -- inspectors ----------------------------------------------------------------------
    def _inspect(self, args: Any, cell: str | None) -> Any:
        from loom.notebook import AgentInspector, BusInspector, ContextInspector, Topology, TraceTimeline

        if not args.target or args.target[0] not in _INSPECTORS:
            raise IPythonUsageError(f"%loom inspect needs one of: {', '.join(_INSPECTORS)} (context takes an AGENT)")
        what, rest = args.target[0], args.target[1:]
        if what == "context":
            if len(rest) != 1:
                raise IPythonUsageError("%loom inspect context AGENT: name the agent")
            return ContextInspector(rest[0])
        if rest:
            raise IPythonUsageError(f"%loom inspect {what} takes no further arguments, got {rest}")
        return {"bus": BusInspector, "agents": AgentInspector, "traces": TraceTimeline, "topology": Topology}[what]()

    # -- agents from cells ---------------------------------------------------------------
    def _agent(self, args: Any, cell: str | None) -> Pending:
        from loom.sdk import Agent

        if cell is None:
            raise IPythonUsageError("use %%loom agent NAME --topics a.b,c.* as a cell magic; the cell defines on_event")
        if len(args.target) != 1:
            raise IPythonUsageError("%%loom agent needs exactly one NAME")
        name = args.target[0]
        topics = [t.strip() for t in args.topics.split(",") if t.strip()]
        namespace = self.shell.user_ns
        previous = namespace.get("on_event")
        namespace.pop("on_event", None)
        exec(compile(cell, f"<%%loom agent {name}>", "exec"), namespace)  # the cell runs in the user's namespace
        handler = namespace.get("on_event")
        if previous is not None and handler is None:
            namespace["on_event"] = previous
        if handler is None or not callable(handler):
            raise IPythonUsageError(f"the cell must define `async def on_event(ctx, topic, event)` for agent {name!r}")
        agent = Agent(name, topics=topics, on_event=handler)  # validates name, topics and signature
        namespace.setdefault("agents", {})[name] = agent
        return track(f"agent {name!r}", agent.start())


def _split(patterns: str) -> list[str]:
    return [p.strip() for p in patterns.split(",") if p.strip()]


class _LocalNatsServer:
    """A nats-server on 127.0.0.1 that a runtime owns (``%loom cluster serve``): it ends at ``%loom stop``,
    or when the kernel exits while it runs (a process outliving its kernel would hold the port)."""

    name = "nats-server"

    def __init__(self, owner: Any, port: int) -> None:
        from loom.cluster import NatsServer

        self.owner = owner
        self.server = NatsServer(host="127.0.0.1", port=port)
        self.closed = False

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)  # it polls until the server listens: not on the kernel's loop
        atexit.register(self.server.stop)

    async def aclose(self) -> None:
        self.closed = True
        atexit.unregister(self.server.stop)
        await asyncio.to_thread(self.server.stop)
