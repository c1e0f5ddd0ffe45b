"""LLMClient and llm.generate: the real ``openai`` client over real HTTP to a scripted server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from email.utils import formatdate

import pytest

import loom
from loom.cognitive.llm import (
    ChatModel,
    LLMBadResponse,
    LLMClient,
    LLMConfig,
    LLMGenerateTool,
    LLMTimeout,
    LLMUnavailable,
    ToolCall,
)
from loom.cognitive.llm.retry import backoff_delay, retry_after
from loom.errors import UsageError
from loom.tools.result import ErrorCode
from tests.conftest import until
from tests.peers.scripted_openai import error, text, tool_call, tool_calls

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def make_llm(server):
    """A factory of clients on the scripted server (tiny backoffs), all closed after the test."""
    made: list[LLMClient] = []

    def make(**overrides) -> LLMClient:
        opts = {"name": "scripted", "base_url": server.base_url, "api_key": "k", "model": "m", "backoff": 0.01}
        opts.update(overrides)
        made.append(LLMClient(LLMConfig(**opts)))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- answers -------------------------------------------------------------------------------------


async def test_chat_returns_the_text_with_the_endpoints_usage(server, make_llm):
    server.push(text("Paris is the capital of France.", usage=(21, 8)))
    llm = make_llm()
    assert isinstance(llm, ChatModel)
    r = await llm.chat(HELLO)
    assert r.text == "Paris is the capital of France."
    assert (r.finish_reason, r.provider, r.model, r.attempts) == ("stop", "scripted", "m", 1)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.estimated) == (21, 8, False)
    assert r.latency_ms > 0
    assert server.requests[0]["messages"] == HELLO and "stream" not in server.requests[0]


async def test_streaming_hands_each_fragment_over_in_order_and_they_join_to_the_text(server, make_llm):
    answer = "The quick brown fox jumps over the lazy dog."
    server.push(text(answer, chunk_delay=0.005))
    fragments: list[tuple[float, str]] = []
    r = await make_llm().chat(HELLO, on_token=lambda f: fragments.append((time.perf_counter(), f)))
    assert len(fragments) == 9
    assert "".join(f for _, f in fragments) == answer == r.text
    assert fragments[-1][0] - fragments[0][0] > 0.02  # they arrived over time, not at the end
    assert server.requests[0]["stream"] is True and server.requests[0]["stream_options"] == {"include_usage": True}
    assert r.usage.estimated is False


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_comes_back_with_id_name_and_arguments(server, make_llm, stream):
    server.push(tool_call("get_weather", {"city": "Paris", "unit": "celsius"}))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = await make_llm().chat(HELLO, tools=tools, on_token=(lambda f: None) if stream else None)
    (call,) = r.tool_calls
    assert call.name == "get_weather" and call.id.startswith("call_")
    assert call.parsed() == {"city": "Paris", "unit": "celsius"}
    assert r.finish_reason == "tool_calls" and r.text == ""
    assert server.requests[0]["tools"] == tools


@pytest.mark.parametrize("stream", [False, True])
async def test_parallel_tool_calls_arrive_in_order(server, make_llm, stream):
    server.push(tool_calls([("add", {"a": 1, "b": 2}), ("time.now", {"tz": "UTC"}), ("add", {"a": 3, "b": 4})]))
    r = await make_llm().chat(HELLO, on_token=(lambda f: None) if stream else None)
    assert [(c.name, c.parsed()) for c in r.tool_calls] == [
        ("add", {"a": 1, "b": 2}),
        ("time.now", {"tz": "UTC"}),
        ("add", {"a": 3, "b": 4}),
    ]
    assert len({c.id for c in r.tool_calls}) == 3


async def test_a_function_name_repeated_in_every_stream_delta_is_kept_once(server, make_llm):
    args = {"city": "San Francisco, California", "days": 5}
    server.push(tool_call("get_weather", args, repeat_name=True))
    r = await make_llm().chat(HELLO, on_token=lambda f: None)
    (call,) = r.tool_calls
    assert call.name == "get_weather"  # not get_weatherget_weather...
    assert call.parsed() == args


async def test_assistant_tool_call_messages_are_sent_with_empty_content_not_null(server, make_llm):
    server.push(text("It is sunny."))
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    history = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call.as_message_part()]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    await make_llm().chat(history)
    sent = server.requests[0]["messages"]
    assert sent[1]["content"] == "" and sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert history[1]["content"] is None  # the caller's messages are not changed


async def test_tool_choice_is_passed_through_and_a_bare_name_becomes_a_named_function(server, make_llm):
    server.push(text("a"), text("b"), text("c"))
    llm = make_llm()
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    await llm.chat(HELLO, tools=tools, tool_choice="required")
    await llm.chat(HELLO, tools=tools, tool_choice="f")
    await llm.chat(HELLO, tool_choice="auto")  # without tools it is not sent (OpenAI refuses that)
    assert server.requests[0]["tool_choice"] == "required"
    assert server.requests[1]["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert "tool_choice" not in server.requests[2] and "tools" not in server.requests[2]


@pytest.mark.parametrize("stream", [False, True])
async def test_malformed_arguments_and_unknown_names_come_back_as_written(server, make_llm, stream):
    server.push(tool_calls([("get_weather", '{"city": "Par'), ("no_such_tool", {})]))
    r = await make_llm().chat(HELLO, on_token=(lambda f: None) if stream else None)
    bad, unknown = r.tool_calls
    assert bad.arguments == '{"city": "Par'
    with pytest.raises(ValueError, match=r"arguments of 'get_weather' are not valid JSON .*\{\"city\": \"Par"):
        bad.parsed()
    assert unknown.name == "no_such_tool" and unknown.parsed() == {}


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_is_estimated_when_the_endpoint_reports_none(server, make_llm, stream):
    server.push(text("x" * 400, usage=None))
    r = await make_llm().chat([{"role": "user", "content": "y" * 800}], on_token=(lambda f: None) if stream else None)
    assert r.usage.estimated is True
    assert r.usage.completion_tokens == 100 and 200 <= r.usage.prompt_tokens <= 210


async def test_request_options_headers_and_body_extras_reach_the_endpoint(server, make_llm):
    server.push(text("a"), text("b"))
    llm = make_llm(temperature=0.2, max_tokens=50, extra_headers={"X-Team": "loom"}, extra_body={"top_k": 5})
    await llm.chat(HELLO)
    await llm.chat(HELLO, temperature=0.0, max_tokens=7)
    first, second = server.requests
    assert (first["temperature"], first["max_tokens"], first["top_k"]) == (0.2, 50, 5)
    assert (second["temperature"], second["max_tokens"]) == (0.0, 7)
    assert server.headers[0]["x-team"] == "loom" and server.headers[0]["authorization"] == "Bearer k"


async def test_config_defaults_come_from_the_openai_environment_variables(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    server.push(text("from env"))
    async with LLMClient(backoff=0.01) as llm:
        r = await llm.generate("hi", system="be brief")
    assert r.text == "from env" and r.provider == "default"
    assert server.requests[0]["model"] == "env-model"
    assert server.requests[0]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert server.headers[0]["authorization"] == "Bearer env-key"


async def test_a_policy_answers_once_the_script_is_empty(server, make_llm):
    def policy(body):
        if body["messages"][-1]["role"] == "tool":
            return text(f"the tool said {body['messages'][-1]['content']}")
        return tool_call("add", {"a": 2, "b": 3})

    server.responder = policy
    llm = make_llm()
    first = await llm.chat(HELLO)
    history = [
        *HELLO,
        first.assistant_message(),
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "5"},
    ]
    second = await llm.chat(history)
    assert first.tool_calls[0].name == "add" and second.text == "the tool said 5"


# -- failures ------------------------------------------------------------------------------------


async def test_429_waits_as_long_as_retry_after_says_then_succeeds(server, make_llm):
    server.push(error(429, "rate limited", {"Retry-After": "1"}), text("ok"))
    started = time.perf_counter()
    r = await make_llm(max_backoff=5).chat(HELLO)
    waited = time.perf_counter() - started
    assert r.text == "ok" and r.attempts == 2 and len(server.requests) == 2
    assert 0.95 <= waited < 3.0


async def test_retry_after_ms_is_honoured_too(server, make_llm):
    server.push(error(503, "busy", {"retry-after-ms": "300"}), text("ok"))
    started = time.perf_counter()
    r = await make_llm().chat(HELLO)
    assert r.attempts == 2 and 0.28 <= time.perf_counter() - started < 1.5


async def test_a_retry_after_beyond_max_backoff_fails_at_once_so_a_router_can_go_elsewhere(server, make_llm):
    server.push(error(429, "come back in an hour", {"Retry-After": "3600"}), text("never"))
    with pytest.raises(LLMUnavailable, match="3600 s, more than max_backoff") as info:
        await make_llm(max_backoff=2).chat(HELLO)
    assert info.value.status == 429 and len(server.requests) == 1


async def test_a_500_then_success_is_retried(server, make_llm):
    server.push(error(500, "boom"), text("recovered"))
    llm = make_llm()
    r = await llm.chat(HELLO, on_token=lambda f: None)
    assert r.text == "recovered " or r.text == "recovered"
    assert r.attempts == 2 and llm.stats.retries == 1


async def test_500_forever_gives_up_with_llm_unavailable_naming_the_provider_status_and_message(server, make_llm):
    server.responder = lambda body: error(500, "the GPU caught fire")
    llm = make_llm(name="cloud", max_retries=2)
    with pytest.raises(LLMUnavailable) as info:
        await llm.chat(HELLO)
    err = info.value
    assert err.provider == "cloud" and err.status == 500 and err.retryable
    assert "provider 'cloud'" in str(err) and "HTTP 500" in str(err) and "the GPU caught fire" in str(err)
    assert "gave up after 3 attempts" in str(err)
    assert len(server.requests) == 3
    assert llm.stats.errors["unavailable"] == 1 and llm.stats.retries == 2


async def test_retries_stop_when_the_next_wait_would_pass_the_calls_timeout(server, make_llm):
    server.responder = lambda body: error(503, "overloaded", {"Retry-After": "0.4"})
    started = time.perf_counter()
    with pytest.raises(LLMUnavailable, match="no time left before the call's timeout") as info:
        await make_llm(max_retries=10).chat(HELLO, timeout=1.0)
    assert time.perf_counter() - started < 1.0  # it did not sleep into the deadline
    assert info.value.status == 503 and 2 <= len(server.requests) <= 3


async def test_other_4xx_is_a_bad_response_and_not_retried(server, make_llm):
    server.push(error(400, "messages[0].role is invalid"), text("never"))
    with pytest.raises(LLMBadResponse, match="HTTP 400.*messages\\[0\\].role is invalid") as info:
        await make_llm().chat(HELLO)
    assert info.value.status == 400 and not info.value.retryable and len(server.requests) == 1


async def test_an_endpoint_that_is_down_is_llm_unavailable_naming_provider_and_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    async with LLMClient(name="local", base_url=url, model="m", backoff=0.01, max_retries=1) as llm:
        with pytest.raises(LLMUnavailable) as info:
            await llm.chat(HELLO)
    assert info.value.provider == "local" and info.value.retryable
    assert url in str(info.value) and "gave up after 2 attempts" in str(info.value)


@pytest.mark.parametrize("drop", ["end", "cut"])
async def test_a_stream_that_stops_before_its_finish_reason_is_an_error_not_an_answer(server, make_llm, drop):
    server.push(text("half an answer that", drop=drop), text("never asked for"))
    fragments: list[str] = []
    with pytest.raises(LLMBadResponse) as info:
        await make_llm().chat(HELLO, on_token=fragments.append)
    assert info.value.retryable  # a router may fail over
    assert "finish_reason" in str(info.value) if drop == "end" else "broke off" in str(info.value)
    assert "".join(fragments) == "half an answer that"
    assert len(server.requests) == 1  # not retried: the tokens were already shown


async def test_a_streamed_tool_call_cut_short_is_an_error(server, make_llm):
    server.push(tool_call("get_weather", {"city": "Paris"}, drop_after=3))
    with pytest.raises(LLMBadResponse, match="without a finish_reason"):
        await make_llm().chat(HELLO, on_token=lambda f: None)


@pytest.mark.parametrize("stream", [False, True])
async def test_the_calls_timeout_ends_it_with_llm_timeout_and_closes_the_request(server, make_llm, stream):
    server.push(text("never finishes", hang=True))
    llm = make_llm()
    started = time.perf_counter()
    with pytest.raises(LLMTimeout, match="within 0.3 s"):
        await llm.chat(HELLO, timeout=0.3, on_token=(lambda f: None) if stream else None)
    assert time.perf_counter() - started < 2.0
    await until(lambda: server.aborted_streams == 1, timeout=5.0)  # a loaded 2-core CI machine is slow to notice
    assert llm.stats.errors["timeout"] == 1


async def test_an_attempt_slower_than_config_timeout_is_llm_timeout(server, make_llm):
    server.push(text("slow", delay=2))
    with pytest.raises(LLMTimeout) as info:
        await make_llm(timeout=0.3).chat(HELLO)
    assert info.value.retryable and len(server.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_cancelling_the_caller_closes_the_http_stream(server, make_llm, stream):
    server.push(text("three words then nothing", hang=True))
    llm = make_llm()
    got_token = asyncio.Event()
    task = asyncio.create_task(llm.chat(HELLO, on_token=(lambda f: got_token.set()) if stream else None))
    if stream:
        await asyncio.wait_for(got_token.wait(), 5)
    else:
        await until(lambda: len(server.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: server.aborted_streams == 1, timeout=5.0)  # a loaded 2-core CI machine is slow to notice
    assert llm.stats.errors["cancelled"] == 1
    server.push(text("still works"))
    assert (await llm.chat(HELLO)).text == "still works"  # the client is fine afterwards


async def test_bad_arguments_and_a_closed_client_are_usage_errors(make_llm, monkeypatch):
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    with pytest.raises(UsageError, match="has no model"):
        await LLMClient(base_url="http://127.0.0.1:1/v1").chat(HELLO)  # refused before any connection
    llm = make_llm()

    async def sink(fragment: str) -> None: ...

    with pytest.raises(UsageError, match="plain function"):
        await llm.chat(HELLO, on_token=sink)
    with pytest.raises(UsageError, match="timeout"):
        await llm.chat(HELLO, timeout=0)
    await llm.aclose()
    with pytest.raises(UsageError, match="closed"):
        await llm.chat(HELLO)


def test_retry_after_reads_seconds_milliseconds_and_http_dates():
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 8 <= retry_after({"retry-after": formatdate(time.time() + 10, usegmt=True)}) <= 10
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None
    delays = [backoff_delay(n, 0.5, 4.0) for n in range(1, 8)]
    assert 0.25 <= delays[0] <= 0.5 and all(2.0 <= d <= 4.0 for d in delays[3:])  # doubling, capped, jittered


async def test_stats_count_calls_tokens_and_latencies(server, make_llm):
    server.push(text("a", usage=(10, 2)), error(400, "no"), text("b", usage=(5, 1)))
    llm = make_llm()
    await llm.chat(HELLO)
    with pytest.raises(LLMBadResponse):
        await llm.chat(HELLO)
    await llm.chat(HELLO)
    s = llm.stats.as_dict()
    assert (s["calls"], s["ok"], s["errors"], s["prompt_tokens"], s["completion_tokens"]) == (
        3,
        2,
        {"bad_response": 1},
        15,
        3,
    )
    assert len(s["latencies_ms"]) == 2 and s["estimated_tokens"] == 0


# -- llm.generate --------------------------------------------------------------------------------


async def test_llm_generate_through_the_tool_registry(server, make_llm):
    server.push(text("Four.", usage=(9, 2)))
    tools = loom.ToolRegistry()
    tools.register(LLMGenerateTool(make_llm()))
    assert "llm.generate" in tools.names()
    result = await tools.invoke("llm.generate", {"prompt": "2+2?", "system": "answer in one word"})
    assert result.ok, result.error
    assert result.output == {
        "text": "Four.",
        "model": "m",
        "provider": "scripted",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "estimated": False},
    }
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "answer in one word"}


async def test_llm_generate_streams_fragments_to_the_topic(server, make_llm):
    server.push(text("one two three"))
    published: list[tuple[str, str]] = []
    tools = loom.ToolRegistry()
    tools.register(LLMGenerateTool(make_llm(), publish=lambda topic, frag: published.append((topic, frag))))
    messages = [{"role": "user", "content": "count"}]
    result = await tools.invoke("llm.generate", {"messages": messages, "stream_topic": "llm.tokens.t1"})
    assert result.ok and result.output["text"] == "one two three"
    assert {t for t, _ in published} == {"llm.tokens.t1"} and "".join(f for _, f in published) == "one two three"


async def test_llm_generate_reports_tool_calls(server, make_llm):
    server.push(tool_call("lookup", {"q": "x"}))
    tools = loom.ToolRegistry()
    tools.register(LLMGenerateTool(make_llm()))
    result = await tools.invoke("llm.generate", {"prompt": "find x"})
    assert result.output["tool_calls"][0]["name"] == "lookup"
    assert json.loads(result.output["tool_calls"][0]["arguments"]) == {"q": "x"}


async def test_llm_generate_maps_model_failures_to_tool_error_codes(server, make_llm):
    server.push(error(400, "bad request"))
    tools = loom.ToolRegistry()
    tools.register(LLMGenerateTool(make_llm()))
    bad = await tools.invoke("llm.generate", {"prompt": "x"})
    assert bad.error.code == ErrorCode.UPSTREAM_ERROR and "bad request" in bad.error.message
    assert bad.error.details["status"] == "400"
    tools.register(LLMGenerateTool(make_llm(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)))
    down = await tools.invoke("llm.generate", {"prompt": "x"})
    assert down.error.code == ErrorCode.PROVIDER_UNAVAILABLE and down.error.details["provider"] == "scripted"
    assert (await tools.invoke("llm.generate", {"temperature": 1})).error.code == ErrorCode.INVALID_PARAMS
    no_bus = await tools.invoke("llm.generate", {"prompt": "x", "stream_topic": "t"})
    assert no_bus.error.code == ErrorCode.INVALID_PARAMS and "no bus" in no_bus.error.message
