"""The NATS connection of a cluster link: options passed through to ``nats-py``, a prompt and clear
error when no server answers at start, and counters for what a lost connection costs.

At start each server URL is tried a couple of times only, so a notebook user without a server
learns it in a second, not after nats-py's default minute of retries; once connected the client
reconnects for as long as it takes (``max_reconnect_attempts=-1`` unless the caller says otherwise),
buffering at most ``pending_size`` bytes of publishes meanwhile (what does not fit is counted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from loom.errors import LoomError

__all__ = [
    "ClusterUnavailable",
    "ConnectionStats",
    "connect",
    "redact",
    "run_now",
    "server_list",
    "send_now",
    "settle",
    "shortcuts",
]

log = logging.getLogger("loom.cluster")

START_HINT = "start one with `loom nats-server` (a local server for experiments) or pass the URL of yours"


class ClusterUnavailable(LoomError, ConnectionError):
    """No NATS server answered at the given URL(s)."""


@dataclass(slots=True)
class ConnectionStats:
    """What happened to the connection: counted by nats-py's callbacks."""

    disconnects: int = 0
    reconnects: int = 0
    slow_consumer_drops: int = 0
    errors: int = 0
    last_error: str = ""
    connected_url: str = ""


def server_list(servers: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"nats://a:4222,nats://b:4222"`` or a list → a list of URLs.

    Raises:
        LoomError: no URL given.
    """
    urls = [u.strip() for u in servers.split(",")] if isinstance(servers, str) else [str(u).strip() for u in servers]
    urls = [u for u in urls if u]
    if not urls:
        raise LoomError(f"the cluster needs at least one server URL, got {servers!r}")
    return urls


async def connect(
    servers: list[str],
    *,
    name: str,
    stats: ConnectionStats,
    on_reconnect: Callable[[], Any] | None = None,
    connect_attempts: int = 2,
    **options: Any,
) -> Any:
    """A connected ``nats.aio.client.Client``. ``options`` go to ``nats.connect`` as they are
    (``user_credentials``, ``tls``, ``token``, ``user``/``password``, ``nkeys_seed``, ``pending_size``...).

    Raises:
        ClusterUnavailable: no server answered within ``connect_attempts`` tries each; the message
            names the URL(s) and how to start a server.
    """
    try:
        import nats
        from nats.errors import SlowConsumerError
    except ImportError:  # the extra is not installed: say which
        raise LoomError("the cluster needs nats-py: pip install 'loom-notebook[nats]'") from None

    async def error_cb(exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            stats.slow_consumer_drops += 1  # core NATS delivery is at-most-once: counted, not raised
        else:
            stats.errors += 1
            stats.last_error = _scrub(f"{type(exc).__name__}: {exc}", servers)

    async def disconnected_cb() -> None:
        stats.disconnects += 1

    async def reconnected_cb() -> None:
        stats.reconnects += 1
        stats.connected_url = _url_of(nc)
        log.info("cluster link %s reconnected to %s", name, stats.connected_url)
        if on_reconnect is not None:
            on_reconnect()

    forever = options.pop("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 0.5)
    options.setdefault("connect_timeout", 2)
    options.setdefault("no_echo", True)  # the server never hands a runtime its own messages back
    nc = nats.NATS()
    try:
        await nc.connect(
            servers=servers,
            name=name,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            max_reconnect_attempts=connect_attempts,
            **options,
        )
    except Exception as exc:  # noqa: BLE001 - NoServersError, OSError, timeouts: one clear message
        await _close_quietly(nc)
        reason = _scrub(stats.last_error or f"{type(exc).__name__}: {exc}", servers)
        where = ", ".join(map(redact, servers))
        if "authorization" in reason.lower() or "authentication" in reason.lower():
            raise ClusterUnavailable(
                f"the NATS server at {where} refused this client ({reason}): check the credentials "
                "(user_credentials=, nkeys_seed=, token=, user=/password=)"
            ) from None
        raise ClusterUnavailable(f"no NATS server answered at {where} ({reason}); {START_HINT}") from None
    # Retry bounds were for the first connect only: a running link reconnects as long as it takes.
    nc.options["max_reconnect_attempts"] = forever
    stats.connected_url = _url_of(nc)
    shortcuts(nc)
    return nc


# -- the client's per-message work on the critical path --------------------------------------------
# nats-py 2.x writes and parses every header line in Python (a regex, strip, translate and encode per
# line to send; a split, a partition, a decode and a per-character scan of the name to read): ~2.3 µs
# and ~0.8 µs a message more than the shortcut below for the one header a Loom conversation message
# carries (measured in isolation), in both processes of a round trip. And a publish is written to the
# socket by the client's flusher task, one loop turn later (a future, a queue, a task step and an
# epoll per message). Loom's connection takes two shortcuts, writing and reading exactly the bytes
# nats-py would:
# - a message whose only header is one of Loom's (Loom-Envelope, Loom-Batch), with a value nats-py
#   would send unchanged, is framed here; a received header block that is exactly one such line is
#   read here. Anything else goes through nats-py's own code.
# - :func:`send_now`: while nothing waits to be written (no pending command, an empty socket buffer,
#   connected), a conversation message (the export's eager path) is written to the socket at once, the
#   first of each loop turn only. Plain events keep the flusher: a burst still leaves in one write,
#   and the export's backlog (hence its batching) still builds behind it.
_LOOM_HEADERS = ("Loom-Envelope", "Loom-Batch")


def shortcuts(nc: Any) -> bool:
    """Give the connected client ``nc`` the shortcuts above (``False``: this nats-py has not the expected
    shape and keeps its own code, which sends and reads the same bytes)."""
    try:
        from nats.aio.client import Client, _validate_subject
        from nats.protocol.command import hpub_cmd, pub_cmd
    except ImportError:  # pragma: no cover - another nats-py layout
        return False
    send, process = getattr(nc, "_send_publish", None), getattr(nc, "_process_headers", None)
    needed = ("_send_command", "_flush_pending", "_flush_queue", "_pending", "_status", "_flusher_task", "_transport")
    if send is None or process is None or not all(hasattr(nc, name) for name in needed):
        return False
    prefixes = {name: f"NATS/1.0\r\n{name}: ".encode() for name in _LOOM_HEADERS}
    readers = tuple((f"NATS/1.0\r\n{name}:".encode(), name) for name in _LOOM_HEADERS)
    connected, loop = Client.CONNECTED, asyncio.get_running_loop()
    turn = [False]  # a message of this loop turn went straight to the socket

    def new_turn() -> None:
        turn[0] = False

    def frame(subject: str, reply: str, payload: bytes, headers: Any) -> bytes | None:
        # the command nats-py's _send_publish would build, or None: let nats-py build it
        if not subject:
            return None  # nats-py raises its error
        if headers is None:
            return pub_cmd(subject, reply, payload)
        if len(headers) != 1:
            return None
        ((name, value),) = headers.items()
        prefix = prefixes.get(name)
        # a value nats-py sends unchanged: a str without CR/LF and nothing to strip
        if prefix is None or type(value) is not str or "\r" in value or "\n" in value or value.strip() is not value:
            return None
        return hpub_cmd(subject, reply, prefix + value.encode() + b"\r\n\r\n", payload)

    async def _send_publish(subject: str, reply: str, payload: bytes, payload_size: int, headers: Any) -> None:
        cmd = frame(subject, reply, payload, headers) if headers is not None else None
        if cmd is None:
            await send(subject, reply, payload, payload_size, headers)
            return
        nc.stats["out_msgs"] += 1
        nc.stats["out_bytes"] += payload_size
        await nc._send_command(cmd)
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()

    async def _process_headers(headers: Any) -> Any:
        # exactly "NATS/1.0\r\n<Loom header>:<value>\r\n\r\n": one line, no status
        if headers and headers.find(b"\r\n", 10) == len(headers) - 4 and headers.endswith(b"\r\n\r\n"):
            for start, name in readers:
                if headers.startswith(start):
                    return {name: headers[len(start) : -4].strip().decode("utf-8", "replace")}
        return await process(headers)

    def send_now(subject: str, payload: bytes, headers: Any) -> bool:
        if turn[0] or nc._pending or nc._status != connected or len(payload) > nc._max_payload:
            return False
        flusher = nc._flusher_task
        writer = getattr(nc._transport, "_io_writer", None)  # a TCP/TLS transport (not a websocket)
        transport = getattr(writer, "transport", None)
        if flusher is None or flusher.done() or transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size():
            return False  # bytes still wait for the socket: this message goes behind them
        cmd = frame(subject, "", payload, headers)
        if cmd is None:
            return False
        if not nc._skip_subject_validation:
            _validate_subject(subject)
        turn[0] = True
        loop.call_soon(new_turn)
        nc.stats["out_msgs"] += 1
        nc.stats["out_bytes"] += len(payload)
        nc._transport.write(cmd)  # the stream writer's write: into the socket now, the rest buffered
        return True

    nc._send_publish, nc._process_headers, nc._loom_send_now = _send_publish, _process_headers, send_now
    return True


def send_now(nc: Any, subject: str, payload: bytes, headers: dict[str, str] | None) -> bool:
    """Write a message to the socket at once, if the connection is idle (nothing pending, connected)
    and no other message took this shortcut in this loop turn; ``False``: publish it as usual.

    Raises:
        nats.errors.BadSubjectError: ``subject`` is not a valid NATS subject.
    """
    now = getattr(nc, "_loom_send_now", None)
    return now is not None and now(subject, payload, headers)


async def settle(nc: Any) -> None:
    """Return once the server has processed every command sent so far (a SUB just made, above all).

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of whatever its flusher task has
    not written yet: the PONG can come back before the server holds a subscription made just before, and
    another client's message sent meanwhile is not routed to it (seen under load). By the time that first
    PONG is read the flusher has written the buffer (it was woken first), so a second PING follows it.
    """
    await nc.flush()
    await nc.flush()


def run_now(coro: Coroutine[Any, Any, Any], done: Callable[[BaseException | None], None]) -> None:
    """Run ``coro`` synchronously up to its first real wait (Python 3.12's eager tasks, by hand).

    nats-py's ``publish`` is a coroutine that, while the client's buffer has room, never waits: it
    appends to the buffer and wakes the flusher. Run this way a publish costs no task switch. Should
    it wait after all, it is finished by a task (the same protocol a Task follows); ``done`` is told
    how it ended either way.
    """
    try:
        waiting = coro.send(None)
    except StopIteration:
        done(None)
        return
    except BaseException as exc:  # noqa: BLE001 - reported to done(), like a task's exception
        done(exc)
        return
    task = asyncio.get_running_loop().create_task(_resume(coro, waiting))
    _resumed.add(task)
    task.add_done_callback(lambda t: (_resumed.discard(t), done(t.exception() if not t.cancelled() else None)))


_resumed: set[asyncio.Task[Any]] = set()  # strong references until they finish


async def _resume(coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)  # a bare yield: one loop turn
            else:
                await waiting  # the future the coroutine waits on
            value: Any = None
            error: BaseException | None = None
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, as a Task would
            error = exc
        try:
            waiting = coro.send(value) if error is None else coro.throw(error)
        except StopIteration:
            return


def redact(url: str) -> str:
    """``url`` without credentials (``nats://user:secret@host`` → ``nats://***@host``): for messages and stats."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def _scrub(text: str, servers: list[str]) -> str:
    # A client error may quote the URL it used: never with the secret in it.
    for url in servers:
        userinfo = url.partition("://")[2].rpartition("@")[0]
        if userinfo:
            text = text.replace(userinfo, "***")
            for part in userinfo.split(":"):
                if len(part) > 3:
                    text = text.replace(part, "***")
    return text


def _url_of(nc: Any) -> str:
    url = getattr(nc, "connected_url", None)
    return redact(url.geturl()) if url is not None else ""


async def _close_quietly(nc: Any) -> None:
    try:
        await nc.close()
    except Exception:  # noqa: BLE001, S110 - nothing to close after a failed connect
        pass
