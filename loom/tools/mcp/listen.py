"""Serving one of the MCP SDK's HTTP apps with uvicorn, the way ``loom mcp serve`` needs it.

The SDK's ``run_streamable_http_async`` / ``run_sse_async`` build the app and hand it to
uvicorn in one call, so nothing can be put around the app (the bearer check). Here the same
two steps are done separately, and differently in three places: the address is bound first (a
busy port is a ``UsageError``, port 0 works, the port is known before the app is built);
uvicorn does not take over SIGINT/SIGTERM (they belong to whoever runs :func:`serve_app`,
which ends when cancelled); and open streams get a bounded grace period on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from loom.errors import UsageError

__all__ = ["bind", "serve_app"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        UsageError: a bad port, or the address cannot be bound (in use, unknown host).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UsageError(f"port must be an int in 0..65535, got {port!r}")
    name = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in name else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((name, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers. Its own would take SIGINT/SIGTERM from the whole
    process while serving (a notebook kernel's interrupt included) and raise the signal again
    once done, in the middle of the runtime's stop. Here the caller decides: cancel to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_app(app: ASGIApp, sock: socket.socket, *, grace: float = 3.0) -> None:
    """Serve ``app`` on ``sock`` until cancelled, then shut down: no new connections, open
    streams (SSE) get ``grace`` seconds, then the app's lifespan ends. The socket is closed."""
    config = uvicorn.Config(app, log_config=None, ws="none", lifespan="on", timeout_graceful_shutdown=grace)
    server = _Uvicorn(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    finally:
        server.should_exit = True
        try:
            await serving
        except asyncio.CancelledError:  # cancelled again while shutting down: stop waiting
            serving.cancel()
            raise
        finally:
            sock.close()
