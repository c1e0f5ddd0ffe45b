"""``llm.generate``: a model as a tool, so remote agents (over the bridge) and MCP clients can use it.

Streaming goes to a topic instead of a callback, because the caller may be in another process:
each fragment is handed to ``publish(topic, fragment)``, which the runtime wires to its bus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loom.cognitive.llm.router import RoutingRefused
from loom.cognitive.llm.router_request import ROUTING_KEYS, RoutingRequest, refusal
from loom.cognitive.llm.types import ChatModel, LLMError, LLMTimeout, LLMUnavailable, Message
from loom.errors import InvalidTopic, ToolError
from loom.events.topics import validate_topic
from loom.tools.result import ErrorCode

__all__ = ["LLMGenerateTool"]

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": ["string", "null"]},
        "tool_calls": {"type": "array"},
        "tool_call_id": {"type": "string"},
    },
}

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "description": "The user's prompt (appended after `messages`, if both)."},
        "system": {"type": "string", "description": "A system message, put first."},
        "messages": {"type": "array", "items": _MESSAGE, "description": "An OpenAI-style conversation."},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_tokens": {"type": "integer", "minimum": 1},
        "stream_topic": {"type": "string", "description": "Publish each text fragment on this topic as it arrives."},
        "privacy": {"type": "string", "enum": ["public", "sensitive", "private", "local-only"]},
        "latency_budget_ms": {"type": "number", "exclusiveMinimum": 0},
        "cost_cap": {"type": "number", "minimum": 0},
        "quality_floor": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "anyOf": [{"required": ["prompt"]}, {"required": ["messages"]}],
    "additionalProperties": False,
}


class LLMGenerateTool:
    """The :class:`~loom.tools.Tool` ``llm.generate`` over any :class:`ChatModel` (a client or a router).

    Returns ``{text, model, provider, finish_reason, usage: {prompt_tokens, completion_tokens,
    estimated}}`` (plus ``tool_calls`` when the model made some). A model that is unreachable or
    too slow raises ``ToolError`` ``PROVIDER_UNAVAILABLE``; a request the router drops (no provider
    may see its ``privacy``, or all are over its ``cost_cap``) ``PERMISSION_DENIED``; any other model
    failure ``UPSTREAM_ERROR``.
    """

    name = "llm.generate"
    description = (
        "Generate text with a language model from a prompt or a conversation; optionally stream it to a topic."
    )
    schema = _SCHEMA
    provider = "native"
    version = "1.0"

    def __init__(self, model: ChatModel, publish: Callable[[str, str], None] | None = None) -> None:
        self.model = model
        self.publish = publish

    def __repr__(self) -> str:
        return f"LLMGenerateTool({self.model!r})"

    async def execute(self, args: dict[str, Any]) -> dict[str, Any]:
        messages: list[Message] = []
        if args.get("system"):
            messages.append({"role": "system", "content": args["system"]})
        messages.extend(dict(m) for m in args.get("messages") or ())
        if args.get("prompt") is not None:
            messages.append({"role": "user", "content": args["prompt"]})
        if not messages:
            raise ToolError(ErrorCode.INVALID_PARAMS, self.name, "give a prompt or messages")
        on_token = None
        topic = args.get("stream_topic")
        if topic:
            publish = self.publish
            if publish is None:
                raise ToolError(ErrorCode.INVALID_PARAMS, self.name, "stream_topic given, but this tool has no bus")
            try:  # before the model is called, not at its first token
                validate_topic(topic)
            except InvalidTopic as exc:
                raise ToolError(ErrorCode.INVALID_PARAMS, self.name, f"stream_topic: {exc}") from None
            on_token = lambda fragment: publish(topic, fragment)  # noqa: E731 - a one-line closure over the topic
        kwargs: dict[str, Any] = {}
        routing = {k: args[k] for k in ROUTING_KEYS if k in args}
        if routing:  # a caller through the bridge can keep its data local, as an agent's event can
            request = RoutingRequest(**routing)
            why = refusal(self.model, request)
            if why is not None:
                raise ToolError(ErrorCode.PERMISSION_DENIED, self.name, why)
            if getattr(self.model, "routes_requests", False):
                kwargs["request"] = request
        try:
            response = await self.model.chat(
                messages,
                temperature=args.get("temperature"),
                max_tokens=args.get("max_tokens"),
                on_token=on_token,
                **kwargs,
            )
        except LLMError as exc:
            if isinstance(exc, RoutingRefused):  # dropped (no provider may see it) or deferred (all down)
                code = ErrorCode.PROVIDER_UNAVAILABLE if exc.retryable else ErrorCode.PERMISSION_DENIED
            elif isinstance(exc, LLMUnavailable | LLMTimeout):
                code = ErrorCode.PROVIDER_UNAVAILABLE
            else:
                code = ErrorCode.UPSTREAM_ERROR
            details = {"provider": exc.provider, "retryable": str(exc.retryable).lower()}
            if exc.status is not None:
                details["status"] = str(exc.status)
            raise ToolError(code, self.name, str(exc), details) from exc
        out: dict[str, Any] = {
            "text": response.text,
            "model": response.model,
            "provider": response.provider,
            "finish_reason": response.finish_reason,
            "usage": {
                "prompt_tokens": response.usage.prompt_tokens,
                "completion_tokens": response.usage.completion_tokens,
                "estimated": response.usage.estimated,
            },
        }
        if response.tool_calls:
            out["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in response.tool_calls]
        return out
