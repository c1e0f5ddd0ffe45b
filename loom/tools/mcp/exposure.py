"""Who may reach ``loom mcp serve`` over HTTP: the bridge's exposure rules, applied to MCP.

- A non-loopback address needs a token (:func:`check_exposure`: ``UsageError`` unless forced).
- With a token, every HTTP request must carry ``Authorization: Bearer <token>``
  (:func:`require_bearer`): the SDK's own bearer middleware (``BearerAuthBackend``,
  ``RequireAuthMiddleware``) around the whole app, with a ``TokenVerifier`` that knows one token
  and compares in constant time. Anything else gets 401.
- ``Host`` and ``Origin`` are checked against DNS rebinding on every transport request, loopback
  included (:func:`transport_security`): the SDK's ``TransportSecuritySettings``, which its SSE
  and streamable-HTTP transports enforce (421 for another Host, 403 for another Origin). Only the
  names this server is reached by are accepted, with its port.
- The default native tools of a non-loopback server leave out ``shell.exec``
  (:func:`served_native_tools`).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import TransportSecuritySettings
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from loom.bridge.local import is_loopback
from loom.errors import UsageError
from loom.tools.native import DEFAULT_NATIVE

__all__ = [
    "LOOPBACK_NAMES",
    "StaticTokenVerifier",
    "allowed_hosts",
    "authority",
    "check_exposure",
    "is_wildcard",
    "require_bearer",
    "served_native_tools",
    "transport_security",
]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
"""Host names always accepted (with the port): a local client can use any of them."""


def is_wildcard(host: str) -> bool:
    """``0.0.0.0``, ``::`` or ``""``: every interface. Not a name anyone can be reached by."""
    try:
        return not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def check_exposure(host: str, token: str | None, force: bool) -> None:
    """Refuse what the bridge refuses: a non-loopback address without a token, unless forced.

    Raises:
        UsageError: the refusal, or a token that cannot travel in a header (empty, spaces,
            characters outside visible ASCII).
    """
    if token is not None and not (token and all("!" <= c <= "~" for c in token)):
        raise UsageError("the MCP token must be non-empty visible ASCII without spaces")
    if not is_loopback(host) and not token and not force:
        raise UsageError(
            f"refusing to serve MCP on {host!r} without a token: anyone who can reach it could call the "
            "runtime's tools. Pass a token (--token or LOOM_MCP_TOKEN), bind 127.0.0.1, or --force"
        )


def served_native_tools(transport: str, host: str, tools: Iterable[str] | None = None) -> tuple[str, ...]:
    """The native tools to serve: ``tools`` when named; otherwise the standard set, less
    ``shell.exec`` when an HTTP transport listens on a non-loopback address."""
    if tools is not None:
        return tuple(tools)
    if transport != "stdio" and not is_loopback(host):
        return tuple(t for t in DEFAULT_NATIVE if t != "shell.exec")
    return DEFAULT_NATIVE


def authority(name: str, port: int | str) -> str:
    """``name:port`` as a Host header carries it (IPv6 in brackets, lower case)."""
    name = name.strip("[]").lower()
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


def _allowed_value(value: str, port: int) -> str:
    """A ``--allowed-host`` value → a Host header value: ``NAME`` gets this server's port;
    ``NAME:PORT`` (``[v6]:PORT``) is kept; ``NAME:*`` accepts any port (the SDK's pattern)."""
    v = value.strip().lower()
    tail: str | None
    if v.startswith("["):
        name, closed, rest = v[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            name = ""  # malformed: refused below
        tail = rest[1:] if rest else None
    elif v.count(":") == 1:
        name, _, tail = v.partition(":")
    else:
        name, tail = v, None  # a bare name, or a bare IPv6 address
    if not name or any(c in name for c in "/@?#[] \t") or (tail is not None and tail != "*" and not tail.isdigit()):
        raise UsageError(f"an allowed host is a name, optionally with :PORT; got {value!r}")
    return authority(name, port if tail is None else tail)


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> list[str]:
    """``Host`` values accepted: the loopback names, the bound host (unless a wildcard), and
    ``extra`` (each ``NAME`` or ``NAME:PORT``), all with the port. On port 80 browsers leave the
    port out, so the bare names are accepted too."""
    names = [*LOOPBACK_NAMES, *([] if is_wildcard(host) else [host])]
    values = [authority(n, port) for n in names]
    if port == 80:
        values += [v.removesuffix(":80") for v in values]
    values += [_allowed_value(v, port) for v in extra]
    return list(dict.fromkeys(values))


def transport_security(host: str, port: int, extra: Iterable[str] = ()) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding protection, on, for exactly the names of :func:`allowed_hosts`;
    an ``Origin`` (sent by browsers) must be ``http://`` one of them."""
    hosts = allowed_hosts(host, port, extra)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts],
    )


class StaticTokenVerifier:
    """The SDK's ``TokenVerifier`` protocol for one fixed token, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token=token, client_id="loom-mcp", scopes=[])
        return None


def require_bearer(app: ASGIApp, token: str) -> ASGIApp:
    """``app`` behind the SDK's bearer middleware: every HTTP request (any path, any method)
    without ``Authorization: Bearer <token>`` gets 401 with ``WWW-Authenticate: Bearer``.
    The lifespan (the app's start and stop) goes straight through."""
    guarded = AuthenticationMiddleware(
        AuthContextMiddleware(RequireAuthMiddleware(app, required_scopes=[])),
        backend=BearerAuthBackend(StaticTokenVerifier(token)),
    )

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await (app if scope["type"] == "lifespan" else guarded)(scope, receive, send)

    return asgi
