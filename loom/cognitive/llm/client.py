"""LLMClient: one OpenAI-compatible provider through the official ``openai`` package.

``openai`` is imported on the first call, not at ``import loom``. Its own retries are off: this
client retries 408/409/429/5xx and connection errors itself (:mod:`~loom.cognitive.llm.retry`),
because only here is it known whether streamed tokens already reached the caller (then a retry
would repeat them) and how much of the call's own deadline is left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.cognitive.llm.retry import Failure, backoff_delay, classify
from loom.cognitive.llm.stream import StreamAccumulator, estimate_usage, parse_completion, prepare_messages
from loom.cognitive.llm.types import (
    LLMBadResponse,
    LLMConfig,
    LLMError,
    LLMResponse,
    LLMTimeout,
    Message,
    TokenSink,
    ToolCall,
    Usage,
)
from loom.errors import UsageError
from loom.telemetry.seam import Instruments

__all__ = ["LLMClient", "LLMStats"]

_CHOICES = frozenset({"auto", "none", "required"})


@dataclass(slots=True)
class LLMStats:
    """What one client has done: cheap counters, read by inspectors and the router."""

    calls: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """By kind: ``unavailable``, ``timeout``, ``bad_response``, ``cancelled``."""
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_tokens: int = 0
    """How many of the tokens above were estimated (the endpoint reported no usage)."""
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=32))
    """Wall time of the most recent successful calls, retries included."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "ok": self.ok,
            "errors": dict(self.errors),
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated_tokens": self.estimated_tokens,
            "latencies_ms": list(self.latencies_ms),
        }


def _error_kind(exc: LLMError) -> str:
    name = type(exc).__name__.removeprefix("LLM")
    return {"Unavailable": "unavailable", "Timeout": "timeout", "BadResponse": "bad_response"}.get(name, name.lower())


class LLMClient:
    """A :class:`~loom.cognitive.llm.types.ChatModel` for one endpoint.

    ``LLMClient(LLMConfig(...))``, ``LLMClient(model="m", base_url=...)`` (fields of
    :class:`LLMConfig`; defaults from ``OPENAI_*``) or ``LLMClient(config, temperature=0)``
    (a config with overrides). Use it from one event loop; ``await client.aclose()`` (or
    ``async with``) closes its HTTP connections. Each call is an ``llm.generate`` span (``instruments``).
    """

    def __init__(self, config: LLMConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = LLMConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self._config = config
        self._client: Any = None  # openai.AsyncOpenAI, made on the first call
        self._closed = False
        self._stats = LLMStats()
        self.instruments = Instruments()

    @property
    def name(self) -> str:
        """The provider's name (``LLMConfig.name``)."""
        return self._config.name

    @property
    def config(self) -> LLMConfig:
        return self._config

    @property
    def stats(self) -> LLMStats:
        return self._stats

    def __repr__(self) -> str:
        cfg = self._config
        model = cfg.model or "$OPENAI_MODEL"
        return f"LLMClient(name={cfg.name!r}, model={model!r}, base_url={cfg.resolved_base_url!r})"

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections. Calls after this raise ``UsageError``."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _openai(self) -> Any:
        if self._closed:
            raise UsageError(f"LLMClient {self.name!r} is closed")
        if self._client is None:
            from openai import AsyncOpenAI

            cfg = self._config
            self._client = AsyncOpenAI(
                api_key=cfg.resolved_api_key,
                base_url=cfg.resolved_base_url,
                timeout=cfg.timeout,
                max_retries=0,  # retried here, see the module docstring
                default_headers=dict(cfg.extra_headers) or None,
            )
        return self._client

    async def generate(self, prompt: str, *, system: str | None = None, **kwargs: Any) -> LLMResponse:
        """One user prompt (after an optional system message); ``kwargs`` as for :meth:`chat`."""
        messages: list[Message] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        return await self.chat(messages, **kwargs)

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
        """Send ``messages``; stream when ``on_token`` is given (each text fragment goes to it as it arrives).

        ``tool_choice``: ``"auto"``, ``"none"``, ``"required"`` (not every server has it),
        ``{"type": "function", "function": {"name": ...}}`` or just a function name.
        ``timeout`` bounds the whole call, retries and their waits included.

        Raises:
            LLMUnavailable: unreachable, or 408/409/429/5xx still after ``max_retries`` (names the
                provider, the status and the server's message).
            LLMTimeout: an attempt took longer than ``config.timeout``, or the call than ``timeout``.
            LLMBadResponse: another 4xx, an unreadable body, or a stream that ended without a
                ``finish_reason`` (not retried here; ``retryable`` tells a router it may fail over).
            UsageError: a bad argument (no model configured, an ``async`` ``on_token``...).
        """
        if on_token is not None and inspect.iscoroutinefunction(on_token):
            raise UsageError("on_token is called synchronously for each fragment; pass a plain function")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise UsageError(f"timeout must be a positive number of seconds, got {timeout!r}")
        cfg = self._config
        attrs = {"loom.llm.provider": self.name, "gen_ai.request.model": cfg.resolved_model, "loom.component": "llm"}
        with self.instruments.span("llm.generate", attrs) as span:
            response = await self._call(messages, tools, tool_choice, temperature, max_tokens, on_token, timeout)
            if span.recording:
                span.set("gen_ai.response.model", response.model)
                span.set("gen_ai.usage.input_tokens", response.usage.prompt_tokens)
                span.set("gen_ai.usage.output_tokens", response.usage.completion_tokens)
                span.set("loom.llm.usage_estimated", response.usage.estimated)
                span.set("loom.llm.finish_reason", response.finish_reason)
                span.set("loom.llm.tool_calls", len(response.tool_calls))
                span.set("loom.llm.streamed", on_token is not None)
            return response

    async def _call(
        self,
        messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: str | Mapping[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
        on_token: TokenSink | None,
        timeout: float | None,
    ) -> LLMResponse:
        sent = prepare_messages(messages, self._config.tool_call_content)
        request = self._request(sent, tools, tool_choice, temperature, max_tokens, stream=on_token is not None)
        client = self._openai()
        stats = self._stats
        stats.calls += 1
        started = time.perf_counter()
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                response = await self._attempts(client, request, on_token, deadline)
        except TimeoutError:
            if not deadline.expired():
                raise
            err = LLMTimeout(self.name, f"no complete answer within {timeout} s (the call's timeout)", retryable=True)
            stats.errors["timeout"] += 1
            raise err from None
        except LLMError as exc:
            stats.errors[_error_kind(exc)] += 1
            raise
        except asyncio.CancelledError:
            stats.errors["cancelled"] += 1
            raise
        latency = (time.perf_counter() - started) * 1000
        usage = response.usage
        if usage.estimated:  # the endpoint reported none
            usage = estimate_usage(sent, tools, response.text, response.tool_calls)
        stats.ok += 1
        stats.prompt_tokens += usage.prompt_tokens
        stats.completion_tokens += usage.completion_tokens
        stats.estimated_tokens += usage.total_tokens if usage.estimated else 0
        stats.latencies_ms.append(latency)
        return dataclasses.replace(response, usage=usage, latency_ms=latency)

    def _request(
        self,
        messages: list[Message],
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: str | Mapping[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        cfg = self._config
        request: dict[str, Any] = {"model": cfg.resolved_model, "messages": messages}
        temperature = cfg.temperature if temperature is None else temperature
        if temperature is not None:
            request["temperature"] = temperature
        max_tokens = cfg.max_tokens if max_tokens is None else max_tokens
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if tools:
            request["tools"] = [dict(t) for t in tools]
            if tool_choice is not None:  # without tools, a tool_choice is an error to OpenAI: dropped
                request["tool_choice"] = _tool_choice(tool_choice)
        if cfg.extra_body:
            request.update(cfg.extra_body)
        if stream:
            request["stream"] = True
            request["stream_options"] = {"include_usage": True}  # servers without it just send no usage
        return request

    async def _attempts(
        self, client: Any, request: dict[str, Any], on_token: TokenSink | None, deadline: asyncio.Timeout
    ) -> LLMResponse:
        """Try, retry, give up: one attempt per loop, each bounded by ``config.timeout``."""
        import openai

        cfg, url = self._config, self._config.resolved_base_url
        attempt = 0
        while True:
            attempt += 1
            guard = asyncio.timeout(cfg.timeout)
            try:
                async with guard:
                    if on_token is None:
                        response = await self._once(client, request)
                    else:
                        response = await self._streamed(client, request, on_token)
            except TimeoutError:
                if not guard.expired():
                    raise
                msg = f"no complete answer from {url} within {cfg.timeout} s (config.timeout)"
                raise LLMTimeout(self.name, msg, retryable=True) from None
            except openai.OpenAIError as exc:
                failure = classify(exc, url)
                delay = self._retry_delay(failure, attempt, deadline)
                if delay is None:
                    raise self._give_up(failure, attempt, deadline) from exc
                self._stats.retries += 1
                await asyncio.sleep(delay)
                continue
            return dataclasses.replace(response, attempts=attempt)

    def _retry_delay(self, failure: Failure, attempt: int, deadline: asyncio.Timeout) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now."""
        cfg = self._config
        if not failure.worth_retrying or attempt > cfg.max_retries:
            return None
        delay = failure.retry_after
        if delay is None:
            delay = backoff_delay(attempt, cfg.backoff, cfg.max_backoff)
        elif delay > cfg.max_backoff:
            return None  # asked to wait longer than we would: fail now so a router can go elsewhere
        when = deadline.when()
        if when is not None and asyncio.get_running_loop().time() + delay >= when:
            return None  # the retry could not finish before the call's deadline
        return delay

    def _give_up(self, failure: Failure, attempt: int, deadline: asyncio.Timeout) -> LLMError:
        cfg = self._config
        if not failure.worth_retrying:
            note = ""
        elif attempt > cfg.max_retries:
            note = f" (gave up after {attempt} attempt{'s' if attempt > 1 else ''})"
        elif failure.retry_after is not None and failure.retry_after > cfg.max_backoff:
            note = f" (the server asks to retry after {failure.retry_after:g} s, more than max_backoff)"
        else:
            note = f" (attempt {attempt}; no time left before the call's timeout to retry)"
        return failure.error(self.name, note)

    async def _once(self, client: Any, request: dict[str, Any]) -> LLMResponse:
        completion = await _post(client, request, stream=False)
        try:
            text, calls, finish, usage, model = parse_completion(completion)
        except (ValueError, AttributeError) as exc:
            url = self._config.resolved_base_url
            raise LLMBadResponse(self.name, f"unusable answer from {url}: {exc}", retryable=True) from None
        return self._response(text, calls, finish or "stop", usage, model)

    async def _streamed(self, client: Any, request: dict[str, Any], on_token: TokenSink) -> LLMResponse:
        import openai

        url = self._config.resolved_base_url
        stream = await _post(client, request, stream=True)
        acc = StreamAccumulator()
        try:
            async for chunk in stream:
                fragment = acc.feed(chunk)
                if fragment:
                    on_token(fragment)
        except openai.OpenAIError as exc:
            # Once the stream is open, a failure is not retried here: tokens may already have been
            # shown, and a server that breaks a stream tends to break it again. A router may fail over.
            failure = classify(exc, url)
            if failure.kind is LLMTimeout:
                raise failure.error(self.name) from exc
            msg = f"the stream from {url} broke off after {acc.chunks} chunks: {failure.message}"
            raise LLMBadResponse(self.name, msg, status=failure.status, retryable=True) from exc
        finally:
            await stream.close()  # also on cancellation: the HTTP stream is closed, not left to the pool
        if acc.finish_reason is None:
            msg = (
                f"the stream from {url} ended without a finish_reason after {acc.chunks} chunks (an incomplete answer)"
            )
            raise LLMBadResponse(self.name, msg, retryable=True)
        return self._response(acc.joined(), acc.tool_calls(), acc.finish_reason, acc.usage, acc.model)

    def _response(
        self, text: str, calls: tuple[ToolCall, ...], finish: str, usage: Usage | None, model: str
    ) -> LLMResponse:
        return LLMResponse(
            text=text,
            tool_calls=calls,
            finish_reason=finish,
            usage=usage if usage is not None else Usage(estimated=True),
            model=model or self._config.resolved_model,
            provider=self.name,
        )


def _tool_choice(choice: str | Mapping[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice in _CHOICES:
            return choice
        return {"type": "function", "function": {"name": choice}}
    if isinstance(choice, Mapping):
        return dict(choice)
    raise UsageError(f"tool_choice must be 'auto', 'none', 'required', a function name or a mapping, got {choice!r}")


async def _post(client: Any, body: dict[str, Any], *, stream: bool) -> Any:
    """POST /chat/completions with ``body`` as it is, through openai's generic ``post``.

    ``chat.completions.create`` first walks the whole request through openai's typed-dict
    transform (aliases, dates, files), which costs about 10 ms of CPU per call for a prompt of a
    few dozen messages and tool schemas (see docs/performance.md); the body here is already plain
    OpenAI JSON, so it goes out unchanged. The answer is parsed into openai's own types as
    ``create`` would, and errors are openai's, so nothing else changes.
    """
    from openai import AsyncStream
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    return await client.post(
        "/chat/completions",
        body=body,
        cast_to=ChatCompletion,
        stream=stream,
        stream_cls=AsyncStream[ChatCompletionChunk],
    )
