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

__all__ = ["ClusterUnavailable", "ConnectionStats", "connect", "redact", "run_now", "server_list", "settle"]

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
    return nc


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
