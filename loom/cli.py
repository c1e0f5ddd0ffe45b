"""The ``loom`` command. Subcommands grow with the runtime (bridge, mcp, replay, bench)."""

from __future__ import annotations

import argparse
import sys

from loom._version import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loom", description="Loom for Python: event-driven agent runtime.")
    p.add_argument("--version", action="version", version=f"loom {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a short scenario in the terminal")
    demo.add_argument("--ticks", type=int, default=2000, help="price ticks to publish (default 2000)")
    bridge = sub.add_parser("bridge", help="serve the loom.v1 gRPC bridge (agents in other processes join through it)")
    bridge.add_argument("--host", default=None, help="bind address (default 127.0.0.1, or from LOOM_BRIDGE_ADDR)")
    bridge.add_argument("--port", type=int, default=None, help="port (default 50051, or from LOOM_BRIDGE_ADDR)")
    bridge.add_argument("--token", default=None, help="require 'authorization: Bearer TOKEN' (or LOOM_BRIDGE_TOKEN)")
    bridge.add_argument("--force", action="store_true", help="allow a non-loopback address without a token")
    bridge.add_argument("--workspace", default=".", help="directory the native tools are confined to")
    mcp = sub.add_parser("mcp", help="Model Context Protocol")
    mcp_sub = mcp.add_subparsers(dest="mcp_command", required=True)
    serve = mcp_sub.add_parser("serve", help="serve the runtime's tools (and `publish`) to MCP clients")
    serve.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1", help="http/sse bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8766, help="http/sse port (default 8766)")
    serve.add_argument(
        "--token", default=None, help="http/sse: require 'Authorization: Bearer TOKEN' (or LOOM_MCP_TOKEN)"
    )
    serve.add_argument("--force", action="store_true", help="allow a non-loopback --host without a token")
    serve.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="another Host header to accept (loopback names and --host always are); repeatable",
    )
    serve.add_argument("--workspace", default=".", help="directory the native tools are confined to")
    serve.add_argument(
        "--tools",
        default="",
        help="comma-separated native tools (default: the standard set; without shell.exec on a non-loopback --host)",
    )
    worker = sub.add_parser("worker", help="run one replica of an agent, joined to a NATS cluster")
    worker.add_argument("agent", help="the agent as module:attribute (a loom.Agent or a function returning one)")
    worker.add_argument("--cluster", required=True, help="NATS server URL(s), comma-separated")
    worker.add_argument("--durable", action="store_true", help="receive through JetStream (acked, nothing lost)")
    worker.add_argument("--ack-wait", type=float, default=30.0, help="--durable: seconds before another takes over")
    worker.add_argument("--name", default=None, help="the runtime's name (default worker-<agent id>)")
    nats_server = sub.add_parser("nats-server", help="run a local NATS server (JetStream on) for experiments")
    nats_server.add_argument("--port", type=int, default=4222, help="client port on 127.0.0.1 (default 4222)")
    nats_server.add_argument("--store-dir", default=None, help="JetStream directory (default: a temporary one)")
    replay = sub.add_parser("replay", help="re-publish a recorded event log into a fresh runtime")
    replay.add_argument("log", help="the SQLite event log (Loom(record=...))")
    replay.add_argument("--speed", default="1.0", help="1.0 = recorded timing, 2 = twice as fast, max = no waits")
    replay.add_argument("--topics", default="", help="comma-separated topic patterns to replay (default all)")
    replay.add_argument("--until", type=float, default=None, help="stop this many seconds into the recording")
    return p


def _replay(args: argparse.Namespace) -> int:
    """``loom replay LOG``: a runtime, the replay, a JSON summary on stdout."""
    import asyncio
    import json

    from loom.errors import LoomError
    from loom.runtime import Loom

    try:
        speed: float | str = args.speed if args.speed == "max" else float(args.speed)
    except ValueError:
        print(f"loom replay: --speed must be a number or max, got {args.speed!r}", file=sys.stderr)
        return 2
    topics = [t.strip() for t in args.topics.split(",") if t.strip()] or None

    async def run() -> dict:
        async with Loom(name="replay", native_tools=()) as rt:
            summary = await rt.replay(args.log, speed=speed, topics=topics, until=args.until)
            return {"log": args.log, **{k: getattr(summary, k) for k in summary.__slots__}}

    try:
        print(json.dumps(asyncio.run(run())))
    except (LoomError, ValueError) as exc:
        print(f"loom replay: {exc}", file=sys.stderr)
        return 2
    return 0


def _mcp_serve(args: argparse.Namespace) -> int:
    """``loom mcp serve``: until stdin closes (stdio) or SIGINT/SIGTERM; a second signal forces."""
    import asyncio
    import os
    import signal

    from loom.errors import UsageError
    from loom.tools.mcp.server import serve

    token = args.token or os.environ.get("LOOM_MCP_TOKEN") or None
    tools = [t.strip() for t in args.tools.split(",") if t.strip()] or None

    def ready(url: str) -> None:  # http/sse only: on stdio, stdout is the protocol's
        print(f"loom mcp ready on {url}{' (token required)' if token else ''}", flush=True)

    async def run() -> None:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None

        def stop() -> None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        await serve(
            args.transport,
            host=args.host,
            port=args.port,
            token=token,
            force=args.force,
            tools=tools,
            allowed_hosts=args.allowed_host,
            on_ready=ready,
            workspace=args.workspace,
        )

    try:
        asyncio.run(run())
    except UsageError as exc:
        print(f"loom mcp serve: {exc}", file=sys.stderr)
        return 2
    except (asyncio.CancelledError, KeyboardInterrupt):
        pass
    return 0


def _worker(args: argparse.Namespace) -> int:
    """``loom worker --cluster URL module:agent``: one replica until SIGINT/SIGTERM."""
    import asyncio

    from loom.cluster.worker import run_worker
    from loom.errors import UsageError

    try:
        asyncio.run(run_worker(args.cluster, args.agent, durable=args.durable, name=args.name, ack_wait=args.ack_wait))
    except UsageError as exc:
        print(f"loom worker: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:  # ClusterUnavailable: the message says how to start a server
        print(f"loom worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _nats_server(args: argparse.Namespace) -> int:
    """``loom nats-server``: the packaged nats-server on 127.0.0.1 until Ctrl-C."""
    import signal

    from loom.cluster.server import NatsServer, NatsServerError

    server = NatsServer(port=args.port, store_dir=args.store_dir)
    try:
        server.start()
    except NatsServerError as exc:
        print(f"loom nats-server: {exc}", file=sys.stderr)
        return 1
    print(f"loom nats-server: listening on {server.url} (JetStream on); Ctrl-C stops it", flush=True)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # SIGTERM stops it as cleanly as Ctrl-C (store removed)
    try:
        assert server.proc is not None
        code = server.proc.wait()
        print(f"loom nats-server: the server exited with code {code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        if args.ticks < 1:
            print("loom demo: --ticks must be >= 1", file=sys.stderr)
            return 2
        from loom.demo import run_demo

        run_demo(ticks=args.ticks)
    elif args.command == "bridge":
        from loom.bridge.cli import run_bridge

        return run_bridge(args)
    elif args.command == "mcp":
        return _mcp_serve(args)
    elif args.command == "replay":
        return _replay(args)
    elif args.command == "worker":
        return _worker(args)
    elif args.command == "nats-server":
        return _nats_server(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
