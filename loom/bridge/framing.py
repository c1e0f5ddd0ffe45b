"""Length-prefixed protobuf frames over an asyncio stream (the bridge's same-host stream).

After a fixed preface from the client, each frame is a 4-byte big-endian length followed by
that many bytes: one serialized message. Frames over the size limit, bytes that do not parse and
a stream cut inside a frame raise :class:`FrameError`; a clean end between frames ends iteration.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from google.protobuf.message import DecodeError

__all__ = ["PREFACE", "ByteCount", "FrameError", "FrameStream"]

PREFACE = b"LOOM-STREAM/1\n"
_HEADER = struct.Struct(">I")


class ByteCount:
    """Bytes in and out, added to by the streams and RPCs that share it (a bridge's ``loom.bridge.bytes``)."""

    __slots__ = ("inbound", "outbound")

    def __init__(self) -> None:
        self.inbound = 0
        self.outbound = 0

    def observe(self) -> list[tuple[float, dict[str, str]]]:
        return [(self.inbound, {"loom.direction": "in"}), (self.outbound, {"loom.direction": "out"})]


class FrameError(ConnectionError):
    """The peer broke the framing; ``code`` is the gRPC status name that fits the fault."""

    def __init__(self, message: str, code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.code = code


class FrameStream:
    """Messages of type ``parse`` in, any message out, at most ``max_bytes`` per frame.

    Offers the part of a grpc.aio stream call the bridge uses (``write``, ``done_writing``,
    ``cancel``, async iteration), so both ends drive either transport with the same code.
    """

    __slots__ = ("_drain", "_high", "_parse", "_reader", "_transport", "_writer", "count", "max_bytes", "peer")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parse: Any,
        max_bytes: int,
        count: ByteCount | None = None,
    ) -> None:
        self._reader, self._writer = reader, writer
        # Frame bytes in and out (length prefix included): the hub's loom.bridge.bytes counts them.
        self.count = count if count is not None else ByteCount()
        self._transport = writer.transport
        self._drain = writer.drain
        self._high = self._transport.get_write_buffer_limits()[1]
        self._parse = parse
        self.max_bytes = max_bytes
        peer = writer.get_extra_info("peername")
        self.peer = f"local:{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else f"local:{peer}"

    async def read(self, parse: Any = None, max_bytes: int | None = None) -> Any:
        """The next message, or None when the peer ended the stream between frames.

        Raises:
            FrameError: oversized frame, bytes that are not the expected message, or a cut frame.
            ConnectionError: the connection was reset.
        """
        limit = self.max_bytes if max_bytes is None else max_bytes
        try:
            (size,) = _HEADER.unpack(await self._reader.readexactly(4))
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise FrameError("the stream ended inside a frame header") from None
        if size > limit:
            raise FrameError(f"a frame of {size} bytes is over the {limit}-byte limit", "RESOURCE_EXHAUSTED")
        try:
            data = await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise FrameError("the stream ended inside a frame") from None
        self.count.inbound += size + 4
        msg = (parse or self._parse)()
        try:
            msg.ParseFromString(data)
        except DecodeError:
            raise FrameError(f"a frame is not a {msg.DESCRIPTOR.name} message", "INVALID_ARGUMENT") from None
        return msg

    def __aiter__(self) -> FrameStream:
        return self

    async def __anext__(self) -> Any:
        msg = await self.read()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def write(self, msg: Any) -> None:
        """Send one message; waits while the peer is not reading (the socket buffer is full).

        Raises:
            FrameError: the message is over the size limit, or the stream is closed.
            ConnectionError: the connection was lost.
        """
        frame = self._frame(msg)
        if frame is None:
            raise FrameError(
                f"a {msg.ByteSize()}-byte message is over the {self.max_bytes}-byte limit", "RESOURCE_EXHAUSTED"
            )
        if self._transport.is_closing():
            raise FrameError("the stream is closed")
        self._transport.write(frame)
        self.count.outbound += len(frame)
        await self._drain()

    def _frame(self, msg: Any) -> bytes | None:
        """``msg`` as one frame, or None when it is over the size limit."""
        data = msg.SerializeToString()
        return None if len(data) > self.max_bytes else _HEADER.pack(len(data)) + data

    def try_write(self, msg: Any) -> bool:
        """Send one message if that needs no waiting (the socket buffer has room); False otherwise."""
        t = self._transport
        if t.is_closing() or t.get_write_buffer_size() >= self._high:
            return False
        frame = self._frame(msg)
        if frame is None:
            return False  # the writer task raises for it
        t.write(frame)
        self.count.outbound += len(frame)
        return True

    def write_nowait(self, msg: Any) -> None:
        """Best effort, never waits: a last word (an error) before the stream is closed."""
        frame = self._frame(msg)
        if frame is not None and not self._transport.is_closing():
            self._transport.write(frame)
            self.count.outbound += len(frame)

    def write_raw(self, data: bytes) -> None:
        """Bytes as they are (the preface)."""
        self._transport.write(data)

    async def done_writing(self) -> None:
        """No more messages from this side (the peer reads the end of the stream)."""
        if not self._transport.is_closing() and self._transport.can_write_eof():
            self._transport.write_eof()

    def cancel(self) -> None:
        """Drop the connection now, unsent bytes included (idempotent)."""
        self._transport.abort()

    async def aclose(self, timeout: float = 1.0) -> None:
        """Close after what is buffered has gone out; a peer that does not read it within
        ``timeout`` seconds is dropped."""
        self._transport.close()
        try:
            async with asyncio.timeout(timeout):
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError):
            self._transport.abort()
