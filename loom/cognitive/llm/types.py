"""The shapes every model-facing part shares: provider configuration, a response, its errors.

Messages are OpenAI chat messages (``{"role", "content", "tool_calls", "tool_call_id"}``) because
every OpenAI-compatible endpoint speaks them; tools are OpenAI function definitions
(:meth:`loom.ToolRegistry.list_tools` ``("openai")``). Anything that answers
:class:`ChatModel` (one :class:`~loom.cognitive.llm.client.LLMClient`, or a
:class:`~loom.cognitive.llm.router.ModelRouter` over several) can drive the cognitive loop.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from loom.errors import LoomError, UsageError

__all__ = [
    "ChatModel",
    "LLMBadResponse",
    "LLMConfig",
    "LLMError",
    "LLMResponse",
    "LLMTimeout",
    "LLMUnavailable",
    "Locality",
    "Message",
    "TokenSink",
    "ToolCall",
    "Usage",
]

Message = dict[str, Any]
TokenSink = Callable[[str], Any]
"""Called with each text fragment as it streams in (sync; a coroutine result is not awaited)."""

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"


class Locality(StrEnum):
    """Where a provider runs, which decides what data it may see (see the router's privacy rules)."""

    LOCAL = "local"
    """On this machine (a loopback endpoint: llama.cpp, Ollama, vLLM on localhost)."""
    PRIVATE = "private"
    """On infrastructure you control (a VPC endpoint, an in-house server)."""
    CLOUD = "cloud"
    """A third-party service."""


def _default_locality(base_url: str) -> Locality:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return Locality.LOCAL
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return Locality.CLOUD
    if ip.is_loopback:
        return Locality.LOCAL
    return Locality.PRIVATE if ip.is_private else Locality.CLOUD


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMConfig:
    """One OpenAI-compatible provider: where it is, which model, and what the router should expect of it.

    ``base_url`` and ``api_key`` default to ``$OPENAI_BASE_URL`` / ``$OPENAI_API_KEY`` (and
    ``model`` to ``$OPENAI_MODEL``); a local endpoint that needs no key gets a placeholder.

    Args:
        name: the provider's name (``local``, ``cloud``...), shown in decisions and events.
        base_url: the ``.../v1`` URL.
        api_key: bearer token.
        model: model id sent with each request.
        temperature, max_tokens: request defaults (``None``: the endpoint's own).
        timeout: seconds for one HTTP attempt (a streamed answer: until its last chunk).
        max_retries: extra attempts after 429, 5xx and connection errors (backoff, honouring Retry-After).
        backoff: first backoff in seconds (doubles per attempt, with jitter, capped at ``max_backoff``).
        locality: where it runs (default: from the URL; loopback is local).
        expected_latency_ms: the router's latency estimate until it has observed calls.
        cost_per_1k_input, cost_per_1k_output: price per 1000 tokens (currency of your choice).
        quality: 0..1, the router's quality estimate for this model.
        tool_call_content: what ``content`` an assistant tool-call message carries when sent back
            (``""`` by default: some servers reject ``null``).
        extra_headers, extra_body: passed through with every request.
    """

    name: str = "default"
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float = 60.0
    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 20.0
    locality: Locality | None = None
    expected_latency_ms: float = 1000.0
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    quality: float = 0.8
    tool_call_content: str | None = ""
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() or c == "." for c in self.name):
            raise UsageError(f"provider name must be a non-empty str without dots or spaces, got {self.name!r}")
        for attr in ("timeout", "expected_latency_ms"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise UsageError(f"LLMConfig.{attr} must be a positive number, got {v!r}")
        for attr in ("backoff", "max_backoff", "cost_per_1k_input", "cost_per_1k_output"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise UsageError(f"LLMConfig.{attr} must be a number >= 0, got {v!r}")
        if not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool) or self.max_retries < 0:
            raise UsageError(f"LLMConfig.max_retries must be an int >= 0, got {self.max_retries!r}")
        if not 0.0 <= float(self.quality) <= 1.0:
            raise UsageError(f"LLMConfig.quality must be within 0..1, got {self.quality!r}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise UsageError(f"LLMConfig.max_tokens must be an int >= 1, got {self.max_tokens!r}")
        url = self.resolved_base_url
        if urlsplit(url).scheme not in ("http", "https"):
            raise UsageError(f"LLMConfig.base_url must be an http(s) URL, got {url!r}")

    @property
    def resolved_base_url(self) -> str:
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_URL).rstrip("/")

    @property
    def resolved_locality(self) -> Locality:
        return Locality(self.locality) if self.locality is not None else _default_locality(self.resolved_base_url)

    @property
    def resolved_api_key(self) -> str:
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            return key
        if self.resolved_locality is not Locality.CLOUD:
            return "not-needed"  # llama.cpp, Ollama, vLLM accept any key
        raise UsageError(
            f"provider {self.name!r} ({self.resolved_base_url}) needs an API key: pass api_key= or set OPENAI_API_KEY"
        )

    @property
    def resolved_model(self) -> str:
        model = self.model or os.environ.get("OPENAI_MODEL")
        if not model:
            raise UsageError(f"provider {self.name!r} has no model: pass model= or set OPENAI_MODEL")
        return model

    @classmethod
    def from_env(cls, name: str = "default", **overrides: Any) -> LLMConfig:
        """A config from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``OPENAI_MODEL``, with overrides."""
        return cls(name=name, **overrides)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for. ``arguments`` is the raw JSON text the model wrote."""

    id: str
    name: str
    arguments: str = "{}"

    def parsed(self) -> dict[str, Any]:
        """The arguments as an object.

        Raises:
            ValueError: they are not valid JSON, or not a JSON object (the message says which).
        """
        text = self.arguments.strip() or "{}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            why = f"{exc.msg} at {exc.pos}"
            raise ValueError(f"arguments of {self.name!r} are not valid JSON ({why}): {text[:200]}") from None
        if not isinstance(value, dict):
            raise ValueError(f"arguments of {self.name!r} must be a JSON object, got {type(value).__name__}")
        return value

    def as_message_part(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call; ``estimated`` when the endpoint gave none and they were counted here."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.estimated or other.estimated,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMResponse:
    """One model answer: text and/or tool calls, why it stopped, what it cost."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    latency_ms: float = 0.0
    attempts: int = 1
    draft: LLMResponse | None = None
    """For a hybrid route: the local model's quick answer that this (refined) one replaced."""

    def assistant_message(self, tool_call_content: str | None = "") -> Message:
        """This answer as the assistant message to append to the conversation."""
        msg: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["content"] = self.text or tool_call_content
            msg["tool_calls"] = [tc.as_message_part() for tc in self.tool_calls]
        return msg


class LLMError(LoomError):
    """A model call failed. ``provider`` names the endpoint; ``retryable`` says whether another try
    (or another provider) might succeed; ``status`` is the HTTP status when there was one."""

    def __init__(self, provider: str, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        self.provider = provider
        self.status = status
        self.retryable = retryable
        super().__init__(f"provider {provider!r}: {message}")


class LLMUnavailable(LLMError):
    """The endpoint could not be reached, or kept failing (connection refused, 5xx, 429) after retries."""


class LLMTimeout(LLMError):
    """No complete answer within the timeout (the HTTP request or stream was closed)."""


class LLMBadResponse(LLMError):
    """The endpoint answered something that is not a usable answer (a stream that ended without a
    ``finish_reason``, a malformed body, a 4xx the request cannot be retried past)."""


@runtime_checkable
class ChatModel(Protocol):
    """What the cognitive loop needs from a model: one chat call."""

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_token: TokenSink | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        """Send ``messages``; stream when ``on_token`` is given (each text fragment goes to it).

        Raises:
            LLMError: the call failed (after retries/failover).
        """
        ...
