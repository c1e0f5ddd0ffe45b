"""Cognitive agents on the bus, the runtime's models (router, llm.generate), MCP tools in the loop,
and the notebook's router inspector and approval panel."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import loom
from loom.cognitive import (
    ApprovalRequest,
    CognitiveAgent,
    CognitiveConfig,
    LLMConfig,
    RoutingRequest,
    SimpleCognitiveLoop,
)
from tests.conftest import drain, until
from tests.peers.scripted_openai import ScriptedOpenAI, text, tool_call

TIME = shutil.which("mcp-server-time") or str(Path(sys.prefix) / "bin" / "mcp-server-time")


def local(srv: ScriptedOpenAI, name: str = "local", **kw) -> LLMConfig:
    return LLMConfig(name=name, base_url=srv.base_url, api_key="x", model="m", backoff=0.01, **kw)


async def test_add_llm_routes_publishes_decisions_and_serves_llm_generate(rt, server):
    decisions = rt.bus.subscribe("router.decisions")
    router = await rt.add_llm(local(server))
    assert rt.llm is router and "llm.generate" in rt.tools
    server.push(text("hello from the model"))
    tokens = rt.bus.subscribe("demo.tokens")
    result = await rt.tools.invoke("llm.generate", {"prompt": "say hello", "stream_topic": "demo.tokens"})
    assert result.ok and result.output["text"] == "hello from the model" and result.output["provider"] == "local"
    assert "".join(e.payload.decode() for _, e in await drain(tokens)) == "hello from the model"
    (_, event), *_ = await drain(decisions)
    body = json.loads(event.payload)
    assert body["route"] == "local" and body["outcome"]["answered_by"] == "local"
    decisions.close()
    tokens.close()


async def test_a_second_add_llm_replaces_the_router_and_stop_closes_it(rt, server):
    first = await rt.add_llm(local(server, "a"))
    second = await rt.add_llm(local(server, "b"))
    assert rt.llm is second and list(second.providers) == ["b"]
    assert first is not second


async def test_a_cognitive_agent_answers_requests_through_the_sdk(rt, server):
    await rt.add_llm(local(server))
    server.push(text("Paris"))
    loop = SimpleCognitiveLoop(CognitiveConfig.single_shot(), rt.llm, rt.tools)
    steps = rt.bus.subscribe("agent.assistant.cognitive")
    agent = await loom.Agent("assistant", topics=["ask.*"], behavior=CognitiveAgent(loop)).start()
    reply = await loom.request_reply("ask.geo", {"question": "Capital of France?"}, timeout=10)
    assert reply is not None and reply.json()["answer"] == "Paris" and reply.json()["ok"] is True
    assert server.requests[0]["messages"][-1] == {"role": "user", "content": "Capital of France?"}
    kinds = [json.loads(e.payload)["kind"] for _, e in await drain(steps)]
    assert kinds == ["usage", "answer"]
    await agent.stop()
    steps.close()


async def test_a_cognitive_agent_answers_thread_messages_and_reports_failures(rt, server):
    await rt.add_llm(local(server))
    server.push(text("first answer"))
    agent = await loom.Agent(
        "assistant",
        topics=["ask.*"],
        behavior=CognitiveAgent(SimpleCognitiveLoop(CognitiveConfig(max_steps=1), rt.llm, rt.tools)),
    ).start()
    got = []

    async def asker(ctx, topic, event):
        got.append(event)

    user = await loom.Agent("user", topics=["thread.*.reply"], on_event=asker).start()
    thread = user.ctx.new_thread()
    await user.ctx.emit("ask.chat", "hello there", thread=thread)
    await until(lambda: got, timeout=10)
    assert got[0].json()["answer"] == "first answer" and got[0].metadata["thread_id"] == thread.id

    rt.tools.register(loom.tool("noop")(lambda: None))
    server.push(tool_call("noop", {}))  # max_steps=1: the run ends without an answer
    reply = await loom.request_reply("ask.more", "use a tool", timeout=10)
    assert reply.metadata["status"] == "error" and "max_steps" in reply.metadata["error"]
    assert reply.json()["ok"] is False and reply.json()["stop_reason"] == "max_steps"
    await user.stop()
    await agent.stop()


async def test_a_cognitive_agent_as_a_core_behaviour_replies_with_an_action(rt, server):
    await rt.add_llm(local(server))
    server.push(text("42"))
    behavior = CognitiveAgent(SimpleCognitiveLoop(CognitiveConfig.single_shot(), rt.llm))
    core = await rt.agents.create("oracle", behavior, topics=["ask.oracle"])
    await core.start()
    reply = await loom.request_reply("ask.oracle", {"question": "the answer?"}, timeout=10)
    assert reply.json()["answer"] == "42" and behavior.answered == 1
    await rt.agents.delete("oracle")


async def test_event_metadata_routes_a_private_question_to_a_local_provider_only(rt, server):
    cloud = ScriptedOpenAI().start()
    try:
        await rt.add_llm(
            local(server, expected_latency_ms=200, quality=0.5),
            local(cloud, "cloud", locality="cloud", quality=0.99, expected_latency_ms=300),
        )
        server.responder = lambda body: text("local answer")
        cloud.responder = lambda body: text("cloud answer")
        loop = SimpleCognitiveLoop(CognitiveConfig.single_shot(), rt.llm, rt.tools)
        await loom.Agent("assistant", topics=["ask.*"], behavior=CognitiveAgent(loop)).start()
        reply = await loom.request_reply(
            "ask.secret", {"question": "my secret?"}, timeout=10, metadata={"privacy": "private"}
        )
        assert reply.json()["answer"] == "local answer" and cloud.requests == []
        answer = await loop.run("anything", request=RoutingRequest(privacy="public", quality_floor=0.9))
        assert answer.text == "cloud answer"
    finally:
        cloud.stop()


async def test_the_loop_calls_a_real_mcp_servers_tool(rt, server):
    await rt.mcp.add("time", command=TIME, args=[])
    await rt.add_llm(local(server))
    server.push(tool_call("time__get_current_time", {"timezone": "Asia/Tokyo"}), text("it is late in Tokyo"))
    answer = await SimpleCognitiveLoop(CognitiveConfig(tools=("time:*",)), rt.llm, rt.tools).run("Time in Tokyo?")
    assert answer.ok
    obs = answer.observations[0]
    assert obs.ok and obs.tool == "time:get_current_time" and "Asia/Tokyo" in obs.text
    assert [t["function"]["name"] for t in server.requests[0]["tools"]] == [
        "time__convert_time",
        "time__get_current_time",
    ]


async def test_the_router_inspector_shows_decisions_from_the_bus(rt, server):
    await rt.add_llm(local(server))
    inspector = loom.RouterInspector(rt)
    try:
        server.push(text("hi"))
        await rt.llm.chat([{"role": "user", "content": "hi"}])
        await asyncio.sleep(0)
        inspector.flush()
        row = inspector.rows[0]
        assert row["route"] == "local" and row["answered_by"] == "local" and row["reason"]
        assert "local" in inspector._repr_html_()
    finally:
        inspector.close()


async def test_the_approval_panel_is_an_approver_its_buttons_decide(rt):
    panel = loom.ApprovalPanel(timeout=5)
    request = ApprovalRequest("assistant", "r1", "fs.write", {"path": "x"}, "dangerous")
    waiting = asyncio.ensure_future(panel(request))
    await asyncio.sleep(0)
    assert [p["tool"] for p in panel.pending] == ["fs.write"]
    panel._on_front_end(panel, {"decide": panel.pending[0]["id"], "allow": True}, [])  # what a click sends
    assert await waiting is True and panel.pending == [] and panel.decided[0]["verdict"] == "approved"
    short = loom.ApprovalPanel(timeout=0.05)
    assert await short(request) is False and short.decided[0]["verdict"] == "timed out"
    panel.close()
    short.close()


async def test_the_context_inspector_shows_a_cognitive_agents_real_prompt_bundle(rt, server):
    await rt.add_llm(local(server))
    loop = SimpleCognitiveLoop(CognitiveConfig(context_window=2000), rt.llm, rt.tools)
    agent = await loom.Agent("thinker", topics=["ask.*"], behavior=CognitiveAgent(loop)).start()
    by_id = loom.ContextInspector("thinker", rt)
    assert by_id.bundle["notes"] and "first run" in by_id.bundle["notes"][0]
    server.push(text("Noted."))
    await loom.request_reply("ask.x", "remember the word lighthouse", timeout=10)
    by_id.flush()
    direct = loom.ContextInspector(loop, rt)
    for view in (by_id, direct):
        b = view.bundle
        assert b["source"].startswith("prompt bundle of thinker")
        assert view.budget == 2000 and b["tokenizer"].startswith(("tiktoken", "estimate"))
        assert b["messages"][-1]["content"] == "remember the word lighthouse"
        assert b["tokens"]["total"] == sum(
            b["tokens"][p] for p in ("system", "instructions", "memory", "messages", "tools")
        )
        view.close()
    await agent.stop()


async def test_a_remote_agent_calls_llm_generate_through_the_bridge(rt, server):
    await rt.add_llm(local(server))
    bridge = await rt.start_bridge(port=0)
    server.push(text("generated remotely"))
    remote = await loom.Agent("visitor", address=f"127.0.0.1:{bridge.port}").start()
    try:
        out = await remote.ctx.tool("llm.generate", {"prompt": "hello", "system": "be brief"}, timeout_ms=10_000)
        assert out["text"] == "generated remotely" and out["provider"] == "local"
        assert server.requests[0]["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
        ]
    finally:
        await remote.stop()


async def test_an_agent_listening_to_its_own_steps_does_not_trigger_itself(rt, server):
    await rt.add_llm(local(server))
    server.responder = lambda body: text("once")
    loop = SimpleCognitiveLoop(CognitiveConfig.single_shot(), rt.llm, rt.tools)
    agent = await loom.Agent("w", topics=["ask.w", "agent.w.>"], behavior=CognitiveAgent(loop)).start()
    await loom.request_reply("ask.w", "hello", timeout=10)
    await asyncio.sleep(0.3)
    assert len(server.requests) == 1
    await agent.stop()


async def test_bad_routing_metadata_is_answered_with_an_error_not_left_waiting(rt, server):
    await rt.add_llm(local(server))
    loop = SimpleCognitiveLoop(CognitiveConfig.single_shot(), rt.llm, rt.tools)
    agent = await loom.Agent("assistant", topics=["ask.*"], behavior=CognitiveAgent(loop)).start()
    reply = await loom.request_reply("ask.x", "hi", timeout=10, metadata={"privacy": "secret"})
    assert reply is not None and reply.metadata["status"] == "error" and "privacy" in reply.metadata["error"]
    assert server.requests == []
    await agent.stop()


async def test_re_adding_the_same_client_keeps_it_open(rt, server):
    from loom.cognitive import LLMClient

    client = LLMClient(local(server))
    try:
        await rt.add_llm(client)
        await rt.add_llm(client)  # a notebook cell run twice
        server.push(text("still here"))
        assert (await rt.llm.chat([{"role": "user", "content": "hi"}])).text == "still here"
    finally:
        await client.aclose()


async def test_a_core_behaviour_publishes_its_steps_where_it_is_told(rt, server):
    await rt.add_llm(local(server))
    server.push(text("42"))
    steps = rt.bus.subscribe("agent.oracle.cognitive")
    behavior = CognitiveAgent(SimpleCognitiveLoop(CognitiveConfig.single_shot(), rt.llm), events=rt.bus)
    core = await rt.agents.create("oracle", behavior, topics=["ask.oracle"])
    await core.start()
    await loom.request_reply("ask.oracle", "the answer?", timeout=10)
    assert [json.loads(e.payload)["kind"] for _, e in await drain(steps)] == ["usage", "answer"]
    await rt.agents.delete("oracle")
    steps.close()


async def test_llm_generate_checks_its_stream_topic_first_and_honours_privacy(rt, server):
    cloud = ScriptedOpenAI().start()
    try:
        await rt.add_llm(local(cloud, "cloud", locality="cloud"))
        bad = await rt.tools.invoke("llm.generate", {"prompt": "x", "stream_topic": "bad topic"})
        assert bad.error.code == "INVALID_PARAMS" and "stream_topic" in bad.error.message
        private = await rt.tools.invoke("llm.generate", {"prompt": "secret", "privacy": "private"})
        assert private.error.code == "PERMISSION_DENIED"
        assert "private" in private.error.message and cloud.requests == []
    finally:
        cloud.stop()


async def test_a_bound_privacy_is_a_floor_a_per_call_request_cannot_loosen(rt, server):
    cloud = ScriptedOpenAI().start()
    try:
        router = await rt.add_llm(
            local(server, quality=0.5), local(cloud, "cloud", locality="cloud", quality=0.99, expected_latency_ms=300)
        )
        server.responder = lambda body: text("local")
        cloud.responder = lambda body: text("cloud")
        loop = SimpleCognitiveLoop(CognitiveConfig.single_shot(), router.using(RoutingRequest(privacy="local-only")))
        answer = await loop.run("secret", request=RoutingRequest(quality_floor=0.9))
        assert answer.text == "local" and cloud.requests == []
    finally:
        cloud.stop()


async def test_an_agent_on_every_topic_is_not_fed_by_its_own_runs(rt, server):
    await rt.add_llm(local(server))
    rt.tools.register(loom.tool("noop.tool")(lambda: "done"))
    server.responder = lambda body: text("ok") if body["messages"][-1]["role"] == "tool" else tool_call("noop_tool", {})
    loop = SimpleCognitiveLoop(CognitiveConfig(), rt.llm, rt.tools)
    agent = await loom.Agent("wide", topics=[">"], behavior=CognitiveAgent(loop)).start()
    decisions = rt.bus.subscribe("router.decisions")  # decisions are published: they must not become goals
    await loom.request_reply("ask.wide", "go", timeout=10)
    await asyncio.sleep(0.3)
    goals = [[m["content"] for m in r["messages"] if m["role"] == "user"][-1] for r in server.requests]
    assert len(server.requests) == 2 and loop.runs == 1, goals
    decisions.close()
    await agent.stop()
