"""Agents in other processes through the bridge: the same handler code, across processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

import loom
from loom import Agent, Loom
from tests.conftest import until

ROOT = Path(__file__).resolve().parents[1]
REMOTE = str(ROOT / "tests" / "peers" / "remote_agent.py")

pytestmark = pytest.mark.slow


class Remote:
    """An agent process; `ready` is awaited from its stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, role: str, address: str, name: str = "") -> Remote:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            REMOTE,
            role,
            address,
            *([name] if name else []),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
        except TimeoutError:
            proc.kill()
            pytest.fail(f"remote agent {role} did not start: {(await proc.stderr.read()).decode()[-800:]}")
        assert line.startswith(b"ready"), line + await proc.stderr.read()
        want = b"grpc" if os.environ.get("LOOM_BRIDGE_LOCAL") == "0" else b"local"
        assert line.split()[-1] == want, line  # the stream the hub fixture asked for
        return cls(proc)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


@pytest.fixture(params=["local", "grpc"])
async def hub(request, tmp_path, monkeypatch):
    """The bridge here, agents in subprocesses: on the same-host stream, and once more on gRPC's."""
    monkeypatch.setenv("LOOM_BRIDGE_LOCAL", "1" if request.param == "local" else "0")
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        remotes: list[Remote] = []

        async def spawn(role: str, name: str = "") -> Remote:
            r = await Remote.start(role, f"127.0.0.1:{server.port}", name)
            remotes.append(r)
            return r

        yield rt, server, spawn
        for r in remotes:
            await r.stop()


async def test_request_reply_and_fanout_across_processes(hub):
    rt, _, spawn = hub
    await spawn("echo", "east")
    await spawn("echo", "west")
    reply = await loom.request_reply("svc.east", "hi", timeout=5)
    assert reply.json() == {"from": "east", "echo": "hi"}
    assert reply.metadata["sender"] == "agent.east" and reply.metadata["loom.sender"] == "east"
    result = await loom.fanout_fanin(["svc.east", "svc.west", "svc.nobody"], "ping", strategy="majority", timeout=5)
    assert result.satisfied and sorted(r.json()["from"] for r in result.replies) == ["east", "west"]
    assert result.missing == ("svc.nobody",)


async def test_an_in_kernel_agent_talks_to_a_remote_one_and_calls_its_capability(hub):
    rt, _, spawn = hub
    await spawn("adder", "calc")
    await spawn("echo", "far")
    out = rt.bus.subscribe("results")

    async def local(ctx, topic, event):
        product = await ctx.tool("math.mul", {"a": 6, "b": 7})
        echoed = await ctx.request(ctx.thread(event), "svc.far", str(product), timeout_ms=5000)
        await ctx.emit("results", {"product": product, "echoed": echoed.json()})

    await Agent("kernel", topics=["go"], on_event=local, runtime=rt).start()
    assert rt.tools.describe("math.mul")["provider"] == "remote"
    await rt.bus.publish("go", loom.Event("go"))
    _, ev = await asyncio.wait_for(out.get(), 10)
    assert ev.json() == {"product": 42, "echoed": {"from": "far", "echo": "42"}}


async def test_contract_net_across_processes(hub):
    rt, _, spawn = hub
    for name in ("ann", "bobby", "cy"):
        await spawn("bidder", name)
    result = await loom.contract_net("task", "jobs", window=3.0, expected=3)
    assert [p.bidder for p in result.proposals] == ["agent.bobby", "agent.ann", "agent.cy"]
    assert result.winners[0].result.json() == {"done_by": "bobby"}


async def test_the_trio_across_three_processes(hub):
    rt, _, spawn = hub
    await spawn("researcher", "researcher")
    await spawn("writer", "writer")

    async def planner(ctx, topic, event):
        if event.type == "user.question":
            thread = ctx.thread(event)
            research = await ctx.request(
                thread, "topic.research", event.text(), type="research.request", timeout_ms=5000
            )
            draft = await ctx.request(
                thread, "topic.writer", {"question": event.text(), "research": research.json()}, timeout_ms=5000
            )
            await ctx.reply(thread, {"answer": draft.text()})

    await Agent("planner", topics=["topic.plan"], on_event=planner, runtime=rt).start()
    reply = await loom.request_reply("topic.plan", "What is Loom?", type="user.question", timeout=10)
    assert reply.json() == {"answer": "Q: What is Loom? A: Loom answers 'What is Loom?' with events."}


async def test_a_remote_agent_killed_mid_call_fails_the_caller_at_once(hub):
    rt, server, spawn = hub
    calc = await spawn("adder", "victim")
    assert "math.mul" in rt.tools
    calc.proc.send_signal(signal.SIGSTOP)  # frozen: the call cannot be answered
    call = asyncio.create_task(rt.tools.invoke("math.mul", {"a": 1, "b": 2}, timeout=30))
    await asyncio.sleep(0.3)
    calc.proc.kill()  # killed mid-call
    r = await asyncio.wait_for(call, 10)
    assert r.error.code == "PROVIDER_UNAVAILABLE"
    assert (await rt.tools.invoke("math.mul", {"a": 1, "b": 2})).error.code == "PROVIDER_UNAVAILABLE"


async def test_sdk_agents_reconnect_after_the_bridge_restarts(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        port = server.port
        remote = await Remote.start("echo", f"127.0.0.1:{port}", "phoenix")
        try:
            assert (await loom.request_reply("svc.phoenix", "1", timeout=5)).json()["echo"] == "1"
            await rt.stop_bridge()
            await asyncio.sleep(1.0)
            await rt.start_bridge(port=port)
            reply = None
            for _ in range(40):  # the agent re-registers with backoff
                try:
                    reply = await loom.request_reply("svc.phoenix", "2", timeout=0.5)
                except loom.NoSubscribers:  # not back yet (this new bridge has no session for it)
                    await asyncio.sleep(0.25)
                    continue
                if reply is not None:
                    break
            assert reply is not None and reply.json()["echo"] == "2"
        finally:
            assert await remote.stop() == 0  # graceful stop on SIGTERM (and never left running)


async def test_a_remote_agent_with_a_wrong_token_is_refused(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0, token="right")
        with pytest.raises(loom.BrokenError, match="UNAUTHENTICATED"):
            await Agent("mallory", address=f"127.0.0.1:{server.port}", token="wrong").start()
        ok = await Agent("alice", topics=["x"], address=f"127.0.0.1:{server.port}", token="right").start()
        assert rt.directory.get("alice").location == "remote"
        await ok.stop()


async def test_the_loom_bridge_command(tmp_path):
    port = _free_port()
    t0 = asyncio.get_running_loop().time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loom.cli",
        "bridge",
        "--workspace",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "LOOM_BRIDGE_ADDR": f"127.0.0.1:{port}"},
    )
    line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
    ready_after = asyncio.get_running_loop().time() - t0
    assert line.strip() == f"loom bridge ready on 127.0.0.1:{port}"
    assert ready_after < 3.0  # interpreter start included; the serving itself is well under a second
    agent = await Agent("visitor", topics=["hello"], address=f"127.0.0.1:{port}").start()
    await agent.stop()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert (await proc.stdout.read()).decode().strip() == "loom bridge stopped"
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loom.cli", "bridge", "--host", "0.0.0.0", stderr=asyncio.subprocess.PIPE
    )
    assert await bad.wait() == 2 and b"without a token" in await bad.stderr.read()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_requests_skip_the_queue_only_when_nothing_is_ahead_of_them(tmp_path):
    """Requests written directly on an idle stream and emits queued behind one another arrive in
    the order they were issued (one mailbox on the hub sees both topics)."""
    seen: list[str] = []

    async def hub_agent(ctx, topic, event):
        seen.append(event.payload.decode())
        if topic == "order.ask":
            await ctx.reply(ctx.thread(event), event.payload)

    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        await Agent("hub", topics=["order.emit", "order.ask"], on_event=hub_agent, runtime=rt).start()
        remote = await Agent("sender", address=f"127.0.0.1:{server.port}").start()
        try:
            issued: list[str] = []
            thread = remote.ctx.new_thread()
            for i in range(60):
                if i % 7 == 3:  # a request: direct when the stream is idle, queued when emits wait
                    issued.append(f"ask{i}")
                    reply = await remote.ctx.request(thread, "order.ask", f"ask{i}".encode(), timeout_ms=5000)
                    assert reply is not None and reply.payload == f"ask{i}".encode()
                else:
                    issued.append(f"emit{i}")
                    await remote.emit("order.emit", f"emit{i}".encode())
            await until(lambda: len(seen) == len(issued), timeout=10)
            assert seen == issued
        finally:
            await remote.stop()


def test_grpc_core_is_tuned_for_the_length_of_the_import_only():
    import subprocess

    probe = "import os, loom.bridge.server, loom.bridge._grpc as g; print(g.TUNED, os.environ.get('GRPC_EXPERIMENTS'))"
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_EXPERIMENTS", "LOOM_GRPC_TUNING")}
    run = lambda **extra: subprocess.run(  # noqa: E731
        [sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert run() == ["True", "None"]  # set while grpc's core read it, gone for child processes
    assert run(GRPC_EXPERIMENTS="-event_engine_dns") == ["False", "-event_engine_dns"]  # the user's own wins
    assert run(LOOM_GRPC_TUNING="0") == ["False", "None"]


async def test_what_an_agent_publishes_while_its_stream_is_down_leaves_on_the_next_one(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        port = server.port
        got = rt.bus.subscribe("later.news")
        remote = await Agent("patient", address=f"127.0.0.1:{port}").start()
        try:
            await rt.stop_bridge()
            await until(lambda: not remote._transport.connected.is_set(), timeout=5)
            await remote.emit("later.news", b"kept for the next stream")  # queued, not lost
            await rt.start_bridge(port=port)
            _, event = await asyncio.wait_for(got.get(), 15)  # after the agent's reconnect backoff
            assert event.payload == b"kept for the next stream"
            assert remote._transport.dropped == {}
        finally:
            await remote.stop()
