"""The cognitive loop against the real openai client and a scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import loom
from loom.cognitive import (
    CognitiveConfig,
    LLMClient,
    LLMConfig,
    SimpleCognitiveLoop,
    StepKind,
    StopReason,
    ThinkingStrategy,
)
from loom.context import AgentContext
from tests.conftest import drain
from tests.peers.scripted_openai import text, tool_call, tool_calls


@pytest.fixture
async def llm(server):
    client = LLMClient(LLMConfig(name="scripted", base_url=server.base_url, api_key="x", model="m", backoff=0.01))
    try:
        yield client
    finally:
        await client.aclose()


@loom.tool("math.add")
async def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@loom.tool("slow.echo")
async def slow_echo(text: str, seconds: float = 0.3) -> str:
    """Echo after a while."""
    await asyncio.sleep(seconds)
    return text


@loom.tool("broken.tool")
async def broken(x: int) -> int:
    """Always fails."""
    raise RuntimeError(f"cannot handle {x}")


def tool_messages(request: dict) -> list[dict]:
    return [m for m in request["messages"] if m["role"] == "tool"]


async def test_react_calls_a_tool_sees_its_result_and_answers(rt, server, llm):
    rt.tools.register(add)
    server.push(tool_call("math_add", {"a": 2, "b": 3}, content="I will add them."), text("2 + 3 = 5"))
    loop = SimpleCognitiveLoop(CognitiveConfig(strategy=ThinkingStrategy.REACT, max_steps=5), llm, rt.tools)
    answer = await loop.run("What is 2 + 3?")
    assert answer.ok and answer.text == "2 + 3 = 5"
    assert [s.kind for s in answer.steps if s.kind is not StepKind.USAGE] == [
        StepKind.THOUGHT,
        StepKind.TOOL_CALL,
        StepKind.OBSERVATION,
        StepKind.ANSWER,
    ]
    obs = answer.observations[0]
    assert obs.ok and obs.tool == "math.add" and obs.text == "5.0"
    first, second = server.requests
    assert {t["function"]["name"] for t in first["tools"]} >= {"math_add"}
    assert first["messages"][-1] == {"role": "user", "content": "What is 2 + 3?"}
    assistant = [m for m in second["messages"] if m["role"] == "assistant"][-1]
    assert assistant["content"] == "I will add them." and assistant["tool_calls"][0]["function"]["name"] == "math_add"
    assert tool_messages(second) == [{"role": "tool", "tool_call_id": obs.call_id, "content": "5.0"}]
    assert answer.model_calls == 2 and answer.usage.total_tokens == 34


async def test_parallel_tool_calls_of_one_turn_run_concurrently(rt, server, llm):
    rt.tools.register(slow_echo)
    server.push(
        tool_calls([("slow_echo", {"text": "a", "seconds": 0.4}), ("slow_echo", {"text": "b", "seconds": 0.4})]),
        text("done"),
    )
    loop = SimpleCognitiveLoop(CognitiveConfig(), llm, rt.tools)
    started = time.perf_counter()
    answer = await loop.run("echo a and b")
    assert time.perf_counter() - started < 0.75  # two 0.4 s calls side by side, not one after the other
    assert [o.text for o in answer.observations] == ["a", "b"]
    assert [m["content"] for m in tool_messages(server.requests[1])] == ["a", "b"]


async def test_tool_failures_unknown_tools_and_bad_arguments_are_observations(rt, server, llm):
    rt.tools.register(broken)
    server.push(
        tool_calls([("broken_tool", {"x": 1}), ("no_such_tool", {}), ("broken_tool", '{"x": 1')]),
        text("I could not do it"),
    )
    answer = await SimpleCognitiveLoop(CognitiveConfig(), llm, rt.tools).run("try")
    assert answer.ok and answer.text == "I could not do it"
    texts = [m["content"] for m in tool_messages(server.requests[1])]
    assert texts[0].startswith("ERROR CAPABILITY_ERROR") and "cannot handle 1" in texts[0]
    assert texts[1].startswith("ERROR NOT_FOUND") and "broken_tool" in texts[1]
    assert texts[2].startswith("ERROR INVALID_PARAMS") and "not valid JSON" in texts[2]
    assert [o.ok for o in answer.observations] == [False, False, False]


async def test_a_tool_that_hangs_becomes_a_timeout_observation(rt, server, llm):
    rt.tools.register(slow_echo)
    server.push(tool_call("slow_echo", {"text": "x", "seconds": 30}), text("the tool was too slow"))
    loop = SimpleCognitiveLoop(CognitiveConfig(tool_timeout=0.2), llm, rt.tools)
    started = time.perf_counter()
    answer = await loop.run("echo slowly")
    assert time.perf_counter() - started < 5
    assert answer.ok and answer.observations[0].text.startswith("ERROR ACTION_TIMEOUT")


async def test_a_model_that_never_stops_calling_tools_ends_at_max_steps(rt, server, llm):
    rt.tools.register(add)
    server.responder = lambda body: tool_call("math_add", {"a": 1, "b": 1})
    answer = await SimpleCognitiveLoop(CognitiveConfig(max_steps=3), llm, rt.tools).run("loop forever")
    assert not answer.ok and answer.stop_reason is StopReason.MAX_STEPS
    assert answer.model_calls == 3 and len(server.requests) == 3
    assert "max_steps=3" in answer.error
    assert answer.steps[-1].kind is StepKind.ERROR


async def test_the_token_budget_ends_a_run(rt, server, llm):
    rt.tools.register(add)
    server.responder = lambda body: tool_call("math_add", {"a": 1, "b": 1})  # 17 tokens per call
    answer = await SimpleCognitiveLoop(CognitiveConfig(max_tokens=30), llm, rt.tools).run("count")
    assert answer.stop_reason is StopReason.MAX_TOKENS and answer.model_calls == 2
    assert "34 tokens" in answer.error and "30" in answer.error


async def test_the_time_limit_ends_a_run(server, llm):
    server.push(text("late", delay=5))
    started = time.perf_counter()
    answer = await SimpleCognitiveLoop(CognitiveConfig(time_limit=0.3), llm).run("hurry")
    assert time.perf_counter() - started < 2
    assert answer.stop_reason is StopReason.TIME_LIMIT and "0.3 s" in answer.error


async def test_a_model_error_ends_the_run_naming_the_provider():
    down = LLMClient(
        LLMConfig(name="gone", base_url="http://127.0.0.1:9/v1", api_key="x", model="m", max_retries=0, timeout=2)
    )
    try:
        answer = await SimpleCognitiveLoop(CognitiveConfig(), down).run("hello?")
    finally:
        await down.aclose()
    assert answer.stop_reason is StopReason.MODEL_ERROR and "'gone'" in answer.error


async def test_dangerous_tools_need_approval_and_a_denial_is_an_observation(server, llm, tmp_path):
    rt2 = await loom.Loom(name="ws", workspace=tmp_path, native_tools=["fs.read", "fs.write"]).start()
    try:
        call = tool_call("fs_write", {"path": "note.txt", "content": "hi"})
        server.push(call, text("not allowed"))
        answer = await SimpleCognitiveLoop(CognitiveConfig(tools=("fs.*",)), llm, rt2.tools).run("write a note")
        assert not (tmp_path / "note.txt").exists()
        assert answer.observations[0].text.startswith("DENIED") and "no approver" in answer.observations[0].text

        seen = []

        async def approve(request):
            seen.append((request.tool, request.args))
            return True

        server.push(tool_call("fs_write", {"path": "note.txt", "content": "hi"}), text("written"))
        cfg = CognitiveConfig(tools=("fs.*",), approve=approve)
        answer = await SimpleCognitiveLoop(cfg, llm, rt2.tools).run("write a note")
        assert answer.ok and (tmp_path / "note.txt").read_text() == "hi"
        assert seen == [("fs.write", {"path": "note.txt", "content": "hi"})]

        server.push(tool_call("fs_write", {"path": "other.txt", "content": "x"}), text("ok"))
        cfg = CognitiveConfig(tools=("fs.*",), approve=lambda request: False)
        answer = await SimpleCognitiveLoop(cfg, llm, rt2.tools).run("write another")
        assert "denied by the approver" in answer.observations[0].text and not (tmp_path / "other.txt").exists()
    finally:
        await rt2.stop()


async def test_single_shot_makes_one_call_without_tools(rt, server, llm):
    rt.tools.register(add)
    server.push(text("Paris"))
    answer = await SimpleCognitiveLoop(CognitiveConfig.single_shot(), llm, rt.tools).run("Capital of France?")
    assert answer.ok and answer.text == "Paris" and answer.model_calls == 1
    assert "tools" not in server.requests[0]


async def test_chain_of_thought_reasons_in_turns_then_answers(server, llm):
    server.push(text("Step 1: 17 is odd."), text("Step 2: it has no divisor but 1 and 17.\nFINAL ANSWER: prime"))
    answer = await SimpleCognitiveLoop(CognitiveConfig.chain_of_thought(), llm).run("Is 17 prime?")
    assert answer.ok and answer.text == "prime"
    assert [t.text for t in answer.thoughts] == ["Step 1: 17 is odd.", "Step 2: it has no divisor but 1 and 17."]
    assert server.requests[1]["messages"][-1]["role"] == "user" and "tools" not in server.requests[1]


async def test_steps_and_tokens_are_events_on_the_agents_topics(rt, server, llm):
    rt.tools.register(add)
    steps = rt.bus.subscribe("agent.calc.cognitive")
    tokens = rt.bus.subscribe("agent.calc.tokens")
    server.push(tool_call("math_add", {"a": 1, "b": 2}), text("it is three"))
    streamed = []
    loop = SimpleCognitiveLoop(CognitiveConfig(), llm, rt.tools, agent_id="calc", events=rt.bus)
    answer = await loop.run("1 + 2?", on_token=streamed.append)
    await asyncio.sleep(0)
    kinds = [json.loads(e.payload)["kind"] for _, e in await drain(steps)]
    assert kinds == [str(s.kind) for s in answer.steps]
    assert "".join(streamed) == "it is three"
    assert "".join(e.payload.decode() for _, e in await drain(tokens)) == "it is three"
    steps.close()
    tokens.close()


async def test_the_context_persists_across_loops_on_one_file(server, llm, tmp_path):
    db = tmp_path / "ctx.db"
    server.push(text("Nice to meet you, Ada."), text("Your name is Ada."))
    first = SimpleCognitiveLoop(CognitiveConfig(), llm).with_context(AgentContext.with_defaults("s1", "a1", path=db))
    await first.run("My name is Ada.")
    await first.aclose()
    second = SimpleCognitiveLoop(CognitiveConfig(), llm).with_context(AgentContext.with_defaults("s1", "a1", path=db))
    answer = await second.run("What is my name?")
    await second.aclose()
    assert answer.text == "Your name is Ada."
    contents = [m["content"] for m in server.requests[1]["messages"]]
    assert "My name is Ada." in contents and "Nice to meet you, Ada." in contents


async def test_a_request_given_to_a_single_model_still_guards_its_privacy(server, llm):
    from loom.cognitive import RoutingRequest

    server.push(text("fine"))
    answer = await SimpleCognitiveLoop(CognitiveConfig(), llm).run("hi", request=RoutingRequest(privacy="local-only"))
    assert answer.ok and answer.text == "fine"  # a loopback endpoint is local
    cloud = LLMClient(LLMConfig(name="far", base_url=server.base_url, api_key="x", model="m", locality="cloud"))
    try:
        answer = await SimpleCognitiveLoop(CognitiveConfig(), cloud).run(
            "secret", request=RoutingRequest(privacy="private")
        )
    finally:
        await cloud.aclose()
    assert answer.stop_reason is StopReason.MODEL_ERROR and "does not allow the model 'far'" in answer.error
    assert len(server.requests) == 1  # nothing was sent to the cloud model


async def test_an_empty_tool_name_from_a_broken_stream_is_an_observation(rt, server, llm):
    server.push(tool_calls([("", {})]), text("sorry"))
    answer = await SimpleCognitiveLoop(CognitiveConfig(), llm, rt.tools).run("do it")
    assert answer.ok and answer.observations[0].text.startswith("ERROR NOT_FOUND")


async def test_the_last_allowed_turns_tools_are_not_called(rt, server, llm):
    calls = []

    @loom.tool("count.me")
    def count_me() -> int:
        """Counts its calls."""
        calls.append(1)
        return len(calls)

    rt.tools.register(count_me)
    server.responder = lambda body: tool_call("count_me", {})
    answer = await SimpleCognitiveLoop(CognitiveConfig(max_steps=2), llm, rt.tools).run("count")
    assert answer.stop_reason is StopReason.MAX_STEPS and len(calls) == 1 and "were not made" in answer.error


async def test_dangerous_patterns_add_to_the_defaults_and_tools_can_declare_themselves_dangerous(rt, server, llm):
    @loom.tool("door.open")
    def open_door(room: str) -> str:
        """Open a door."""
        return f"{room} open"

    @loom.tool("vault.open", dangerous=True)
    def open_vault() -> str:
        """Open the vault."""
        return "open"

    rt.tools.register(open_door)
    rt.tools.register(open_vault)
    cfg = CognitiveConfig(dangerous={"door.*"})
    assert {"fs.write", "shell.exec"} <= cfg.dangerous
    server.push(tool_calls([("door_open", {"room": "hall"}), ("vault_open", {})]), text("no"))
    answer = await SimpleCognitiveLoop(cfg, llm, rt.tools).run("open up")
    assert [o.text[:6] for o in answer.observations] == ["DENIED", "DENIED"]


async def test_a_refused_goal_is_not_kept_for_a_later_run(server):
    from loom.cognitive import RoutingRequest

    cloud = LLMClient(LLMConfig(name="far", base_url=server.base_url, api_key="x", model="m", locality="cloud"))
    loop = SimpleCognitiveLoop(CognitiveConfig(), cloud)
    try:
        refused = await loop.run("my password is hunter2", request=RoutingRequest(privacy="private"))
        server.push(text("sunny"))
        await loop.run("what's the weather?")
    finally:
        await loop.aclose()
        await cloud.aclose()
    assert refused.stop_reason is StopReason.MODEL_ERROR
    assert "hunter2" not in json.dumps(server.requests)


def test_a_model_of_unknown_locality_takes_what_may_go_anywhere():
    from loom.cognitive import RoutingRequest
    from loom.cognitive.llm.router_request import refusal

    class Opaque:  # any ChatModel without an LLMConfig
        async def chat(self, messages, **kw): ...

    assert refusal(Opaque(), RoutingRequest(privacy="public")) is None
    assert refusal(Opaque(), RoutingRequest(privacy="sensitive")) is None
    assert "does not allow" in refusal(Opaque(), RoutingRequest(privacy="private"))


async def test_a_whitespace_tool_name_is_an_observation_too(rt, server, llm):
    server.push(tool_calls([(" ", {})]), text("sorry"))
    answer = await SimpleCognitiveLoop(CognitiveConfig(), llm, rt.tools).run("do it")
    assert answer.ok and answer.observations[0].text.startswith("ERROR NOT_FOUND")


async def test_steps_name_the_registry_tool_and_malformed_arguments_are_kept_as_written(rt, server, llm):
    rt.tools.register(add)
    server.push(tool_call("math_add", '{"a": 1'), text("bad args"))
    ctx = AgentContext("s", "a")
    answer = await SimpleCognitiveLoop(CognitiveConfig(), llm, rt.tools).with_context(ctx).run("add")
    assert answer.tool_calls[0].tool == "math.add"
    calls = [i for i in await ctx.history(10) if i.kind == "tool_call"]
    assert calls[0].name == "math.add" and calls[0].data == {"unparsed": '{"a": 1'}
    await ctx.aclose()
