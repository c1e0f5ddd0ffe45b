"""Loom's error vocabulary.

Two families, as in pydantic-ai: :class:`UsageError` is a developer mistake found at definition
or call time (a malformed topic, an unknown QoS, a bad handler); the others are run-time
conditions that carry the fields a caller needs to react.

Closed versus broken follows trio/anyio: :class:`ClosedError` means *we* closed the resource,
:class:`BrokenError` means the peer or an outside cause ended it.
"""

from __future__ import annotations

__all__ = [
    "BackpressureTimeout",
    "BrokenError",
    "ClosedError",
    "InvalidEvent",
    "InvalidTopic",
    "LoomError",
    "NoRuntime",
    "NoSubscribers",
    "PayloadError",
    "RuntimeStopped",
    "StopFailed",
    "StreamRefused",
    "SubscriptionClosed",
    "ToolError",
    "UsageError",
    "WouldBlock",
]


class LoomError(Exception):
    """Base class of every error Loom raises on purpose."""


class UsageError(LoomError, ValueError):
    """The caller used the API wrongly (bad argument, wrong state). The message names the rule."""


class InvalidTopic(UsageError):
    """A topic or subscription pattern breaks the topic rules (see docs/messaging.md).

    Attributes:
        topic: the offending value (repr-safe).
        reason: what is wrong with it.
    """

    def __init__(self, topic: object, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"invalid topic {topic!r}: {reason}")


class InvalidEvent(UsageError):
    """An :class:`~loom.events.event.Event` field breaks its rules (empty type, priority outside
    0..100, confidence outside 0..1, NaN). The message names the field."""


class PayloadError(LoomError, ValueError):
    """An event's payload is not what it was read as (not JSON for ``.json()``, not UTF-8 for ``.text()``)."""


class NoRuntime(LoomError, RuntimeError):
    """No running :class:`loom.Loom` in this process (start one, or pass ``runtime=``)."""


class ClosedError(LoomError):
    """The resource was closed by this side (a subscription, the bus, the runtime)."""


class SubscriptionClosed(ClosedError):
    """The subscription was closed; nothing more will be delivered to it.

    Attributes:
        subscription_id: the closed subscription.
        reason: ``"closed"`` (its owner closed it), ``"bus_closed"``, or ``"consumer_gone"``
            (its consumer task ended while the queue was full).
    """

    def __init__(self, subscription_id: str, reason: str = "closed") -> None:
        self.subscription_id = subscription_id
        self.reason = reason
        super().__init__(f"subscription {subscription_id} is closed ({reason})")


class RuntimeStopped(ClosedError):
    """The runtime stopped (or is stopping) while the operation was pending or requested."""


class StopFailed(LoomError, ExceptionGroup):  # noqa: N818 - reads as what happened
    """Closing some parts of the runtime raised; every other part was still closed.

    ``exceptions`` holds each error, in the order the parts were closed.
    """

    def derive(self, excs):  # type: ignore[no-untyped-def, override]
        return StopFailed(self.message, excs)


class BrokenError(LoomError):
    """The peer went away (a bridge client, an MCP server, a subprocess)."""


class StreamRefused(BrokenError):
    """The bridge refused a stream's opening; ``code`` is the gRPC status name it answered with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NoSubscribers(LoomError):
    """A request went to a topic nothing subscribes to, so no reply can come (raised at once
    instead of waiting for the timeout).

    Attributes:
        topic: the topic of the request.
    """

    def __init__(self, topic: str, detail: str = "") -> None:
        self.topic = topic
        super().__init__(f"nothing subscribes to {topic!r}: no reply can come{detail}")


class WouldBlock(LoomError):
    """A ``*_nowait`` operation could not complete without waiting."""


class BackpressureTimeout(LoomError, TimeoutError):
    """A publish waited longer than its ``timeout`` for room in a subscriber's queue.

    Deliveries to subscribers that had room were made; ``delivered`` counts them.

    Attributes:
        topic: the topic published to.
        subscription_id: the subscription that stayed full.
        delivered: deliveries completed before the timeout.
        timeout: the timeout in seconds.
    """

    def __init__(self, topic: str, subscription_id: str, delivered: int, timeout: float) -> None:
        self.topic = topic
        self.subscription_id = subscription_id
        self.delivered = delivered
        self.timeout = timeout
        super().__init__(
            f"publish to {topic!r} timed out after {timeout:g}s waiting for room in subscription "
            f"{subscription_id} ({delivered} deliveries made)"
        )


class ToolError(LoomError):
    """A capability/tool call failed. ``code`` is one of the documented codes.

    Codes (``loom.tools.ErrorCode``): ``NOT_FOUND``, ``INVALID_PARAMS``, ``CAPABILITY_ERROR`` (the
    callee raised), ``PERMISSION_DENIED``, ``ACTION_TIMEOUT``, ``PROVIDER_UNAVAILABLE``, ``TOOL_ERROR``,
    ``UPSTREAM_ERROR``.

    Attributes:
        code: the error code.
        tool: the tool or capability name.
        details: extra str → str information (e.g. validation errors).
    """

    def __init__(self, code: str, tool: str, message: str, details: dict[str, str] | None = None) -> None:
        self.code = str(code)
        self.tool = tool
        self.message = message
        self.details = details or {}
        super().__init__(f"{tool}: {self.code}: {message}")
