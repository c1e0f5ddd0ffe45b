"""``loom bridge``: a runtime whose only job is to serve the bridge, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from loom.errors import UsageError

__all__ = ["parse_addr", "run_bridge"]


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``) → (host, port).

    Raises:
        UsageError: not host:port with a numeric port.
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"expected host:port, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def run_bridge(args: Any) -> int:
    env_host, env_port = (
        parse_addr(os.environ["LOOM_BRIDGE_ADDR"]) if os.environ.get("LOOM_BRIDGE_ADDR") else (None, None)
    )
    host = args.host or env_host or "127.0.0.1"
    port = args.port if args.port is not None else env_port if env_port is not None else 50051
    token = args.token or os.environ.get("LOOM_BRIDGE_TOKEN") or None

    async def main() -> None:
        from loom.runtime import Loom

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Loom(name="bridge", workspace=args.workspace) as rt:
            server = await rt.start_bridge(host, port, token=token, force=args.force)
            print(f"loom bridge ready on {server.address}{' (token required)' if token else ''}", flush=True)
            await stop.wait()
        print("loom bridge stopped", flush=True)

    try:
        asyncio.run(main())
    except UsageError as exc:
        print(f"loom bridge: {exc}", file=sys.stderr)
        return 2
    return 0
