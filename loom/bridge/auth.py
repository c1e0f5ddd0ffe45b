"""Bearer-token authentication for the bridge: every call must carry ``authorization: Bearer <token>``."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from loom.bridge._grpc import grpc

__all__ = ["TokenInterceptor"]


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without the right token with ``UNAUTHENTICATED`` (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        metadata = dict(details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        handler = await continuation(details)
        if hmac.compare_digest(given, self._expected) or handler is None:
            return handler
        return _deny(handler)


def _deny(handler: Any) -> Any:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
