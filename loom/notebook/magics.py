"""``%loom`` / ``%%loom``: the runtime in the kernel's own event loop.

Nothing here blocks the kernel: starting is synchronous (no awaiting needed), and work that
must await (stopping, starting an agent) runs as a task whose handle the magic returns
(``await`` it in a cell to wait).
"""

from __future__ import annotations

import asyncio
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

    @magic_arguments()
    @argument(
        "action", choices=["start", "stop", "status", "bridge", "mic", "inspect", "agent", "trace"], help="what to do"
    )
    @argument(
        "target",
        nargs="*",
        help="inspect: bus|agents|context AGENT|traces|topology; agent: NAME; trace: on|off; mic: stop",
    )
    @argument(
        "--bridge", nargs="?", const=50051, type=int, default=None, metavar="PORT", help="start: serve the bridge"
    )
    @argument("--state", default=None, metavar="PATH", help="start: SQLite file for agents' persistent state")
    @argument("--name", default="notebook", help="start: runtime name")
    @argument("--port", type=int, default=50051, help="bridge: port")
    @argument("--token", default=None, help="bridge: required bearer token")
    @argument("--device", type=int, default=None, help="mic: input device index")
    @argument("--wav", default=None, help="mic: read a WAV file instead of a device")
    @argument("--topics", default="", help="agent: comma-separated topic patterns")
    @line_cell_magic
    def loom(self, line: str, cell: str | None = None) -> Any:
        """Run Loom inside this kernel.

        %loom start [--bridge [PORT]] [--state PATH]   start the runtime on the kernel's loop
        %loom stop | status
        %loom inspect bus|agents|context AGENT|traces|topology
        %loom bridge [--port P --token T]   serve the gRPC bridge (await the result to wait)
        %loom trace on|off|status   OpenTelemetry spans and metrics (every runtime of this kernel)
        %loom mic [--device N | --wav FILE] | %loom mic stop   the voice pipeline (`voice`), with its panel
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
            self.shell.user_ns.setdefault("rt", rt)
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
        port = args.bridge if args.bridge is not None else args.port

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
