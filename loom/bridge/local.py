"""The same-host stream: an EventStream over length-prefixed frames on a loopback socket.

gRPC stays the bridge's protocol (RegisterAgent, ForwardAction, Heartbeat, and EventStream for
remote hosts and upstream clients). For an SDK agent on the bridge's own host the server also
offers its EventStream on a plain loopback socket, advertised in ``AgentRegisterResponse.features``
as ``local_stream=127.0.0.1:PORT``: the same ClientEvent / ServerEvent messages, each in a frame
(:mod:`loom.bridge.framing`), without HTTP/2 and grpc.aio's own threads between the two event
loops: a request/reply to the bridge's process takes about a quarter less time
(docs/performance.md).

A connection: the client sends the preface; the server answers with a ``StreamHello`` carrying
its ``server_id`` (also advertised, as ``local_stream_id``: the client checks it before saying
anything else, so a stranger listening on that port never gets the token); the client sends a
``StreamHello`` with the bridge's token, when it has one (compared in constant time). Then the
stream is exactly a gRPC EventStream: Ack first, then anything. The server answers faults with
an ``err`` frame and closes: a wrong token (UNAUTHENTICATED), no hello or Ack in time, an
oversized or unparsable frame, a stalled reader. A wrong preface (not our protocol) is closed
without a word.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING

from loom.bridge._pb.loom.v1 import bridge_pb2
from loom.bridge.framing import PREFACE, FrameError, FrameStream
from loom.errors import StreamRefused

if TYPE_CHECKING:
    from loom.bridge.server import BridgeServer

__all__ = ["LocalStreamServer", "is_loopback", "open_local_stream"]

log = logging.getLogger("loom.bridge")
_HELLO_MAX = 4096


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error(code: str, message: str) -> bridge_pb2.ServerEvent:
    return bridge_pb2.ServerEvent(err=bridge_pb2.Error(code=code, message=message))


class LocalStreamServer:
    """Serves the bridge's EventStream on a loopback socket (a free port, chosen at start)."""

    def __init__(self, bridge: BridgeServer, host: str = "127.0.0.1") -> None:
        if not is_loopback(host):
            raise ValueError(f"the same-host stream listens on loopback only, not {host!r}")
        self.bridge = bridge
        self.host = "127.0.0.1" if host == "localhost" else host.strip("[]")  # one address, one port
        self.port = 0
        self.server_id = secrets.token_hex(16)
        self._server: asyncio.Server | None = None
        self._streams: dict[FrameStream, asyncio.Task[None]] = {}

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for stream in list(self._streams):
            stream.cancel()  # aborts: a client that does not read cannot hold the socket open
        tasks = list(self._streams.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=2)
            for task in late:
                task.cancel()
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b = self.bridge
        stream = FrameStream(reader, writer, bridge_pb2.ClientEvent, b.max_message_bytes, b.bytes)
        self._streams[stream] = asyncio.current_task()  # type: ignore[assignment]
        try:
            try:
                async with asyncio.timeout(b.ack_timeout):
                    if await reader.readexactly(len(PREFACE)) != PREFACE:
                        return  # not our protocol: nothing to say
                    stream.write_nowait(bridge_pb2.StreamHello(server_id=self.server_id))
                    hello = await stream.read(bridge_pb2.StreamHello, _HELLO_MAX)
            except TimeoutError:
                raise StreamRefused("INVALID_ARGUMENT", f"no hello within {b.ack_timeout:g}s") from None
            if hello is None:
                return
            if b.token and not hmac.compare_digest(hello.token.encode(), b.token.encode()):
                raise StreamRefused("UNAUTHENTICATED", "missing or wrong bearer token")
            conn = await b.accept_stream(stream, stream.peer)
            conn.write_now = stream.try_write
            await b.run_stream(conn, stream, stream.write)
            if conn.close_code:  # the server ended it for a fault: say which
                stream.write_nowait(_error(conn.close_code, conn.close_reason))
        except (StreamRefused, FrameError) as exc:
            stream.write_nowait(_error(exc.code, str(exc)))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            log.debug("same-host stream from %s ended: %r", stream.peer, exc)
        finally:
            self._streams.pop(stream, None)
            await stream.aclose()


async def open_local_stream(
    features: Mapping[str, str], token: str | None, max_bytes: int, timeout: float
) -> FrameStream:
    """Connect to the same-host stream a bridge advertised in its RegisterAgent ``features``, check
    it is that bridge (its ``local_stream_id``), then send the token; the caller sends the Ack.

    Raises:
        OSError (FrameError among them) / TimeoutError: nothing, or a stranger, listens there.
        ValueError: ``address`` is not a loopback ``host:port``.
    """
    address, server_id = features.get("local_stream", ""), features.get("local_stream_id", "")
    host, _, port = address.rpartition(":")
    if not is_loopback(host) or not port.isdigit():
        raise ValueError(f"not a loopback host:port: {address!r}")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), limit=1 << 20)
    stream = FrameStream(reader, writer, bridge_pb2.ServerEvent, max_bytes)
    try:
        stream.write_raw(PREFACE)
        async with asyncio.timeout(timeout):
            greeting = await stream.read(bridge_pb2.StreamHello, _HELLO_MAX)
        if greeting is None or not hmac.compare_digest(greeting.server_id.encode(), server_id.encode()):
            raise FrameError(f"{address} is not the bridge that advertised it")
        await stream.write(bridge_pb2.StreamHello(token=token or ""))
    except BaseException:
        stream.cancel()
        raise
    return stream
