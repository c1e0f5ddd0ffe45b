"""MCP: configuration, real servers (PyPI and npm, stdio / streamable HTTP / SSE), faults, server mode."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import pytest

import loom
from loom import Loom, UsageError
from loom.tools.mcp import parse_mcp_config, servers_from_env

ROOT = Path(__file__).resolve().parents[1]
PEER = str(ROOT / "tests" / "peers" / "mcp_peer.py")
PEERS = ROOT / ".venv" / "mcp-peers" / "node_modules"
EVERYTHING = PEERS / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
FILESYSTEM = PEERS / ".bin" / "mcp-server-filesystem"
TIME = Path(sys.prefix) / "bin" / "mcp-server-time"
LOOPBACK = str(ROOT / "tests" / "peers" / "loopback.cjs")

pytestmark = pytest.mark.slow


def need(path: Path) -> str:
    if not path.exists():
        pytest.fail(f"{path} is missing: `make test` installs the MCP test peers")
    return str(path)


@pytest.fixture
async def rt(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as runtime:
        yield runtime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_port(port: int, proc: asyncio.subprocess.Process, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            pytest.fail(f"server exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    pytest.fail(f"nothing listens on 127.0.0.1:{port}")


async def start_server(*cmd: str, port: int, env: dict | None = None) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *cmd, env={**os.environ, **(env or {})}, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await wait_port(port, proc)
    return proc


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def listening_only_on_loopback(port: int) -> bool:
    """No socket listens on this port on another address (checked in /proc/net/tcp{,6})."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port and addr not in ("0100007F", "00000000000000000000000001000000"):
                return False
    return True


# -- configuration -------------------------------------------------------------------------


def test_the_mcp_servers_json_format_and_upstreams_array_form():
    (a,) = parse_mcp_config(
        '{"mcpServers": {"time": {"command": "mcp-server-time", "args": ["--x"], "env": {"A": "1"}}}}'
    )
    assert (a.name, a.transport, a.command, a.args, a.env) == ("time", "stdio", "mcp-server-time", ("--x",), {"A": "1"})
    web, sse = parse_mcp_config(
        {"web": {"url": "http://127.0.0.1:1/mcp"}, "old": {"url": "http://127.0.0.1:2/sse", "type": "sse"}}
    )
    assert (web.transport, sse.transport) == ("http", "sse")
    (arr,) = parse_mcp_config([{"name": "t", "command": "x"}])
    assert arr.name == "t"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ("{not json", "not valid JSON"),
        ({"t": {}}, "needs a command"),
        ({"bad name": {"command": "x"}}, "letters"),
        ({"t": {"url": "ftp://x"}}, "http"),
        ({"t": {"command": "x", "args": "a b"}}, "args"),
        ([{"command": "x"}], "name"),
        ({"t": {"command": "x", "type": "carrier-pigeon"}}, "unknown type"),
        (42, "object or a list"),
    ],
)
def test_bad_configurations_are_rejected_with_the_reason(config, match):
    with pytest.raises(UsageError, match=match):
        parse_mcp_config(config)


async def test_loom_mcp_servers_is_loaded_at_start_and_failures_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "LOOM_MCP_SERVERS", f'{{"time": {{"command": "{need(TIME)}"}}, "broken": {{"command": "/no/such/server"}}}}'
    )
    assert [c.name for c in servers_from_env()] == ["time", "broken"]
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        assert "time:get_current_time" in rt.tools
        states = {s["name"]: s["status"] for s in rt.mcp.describe()}
        assert states == {"time": "connected", "broken": "down"}


# -- real servers --------------------------------------------------------------------------


async def test_mcp_server_time_from_pypi(rt):
    names = await rt.mcp.add("time", command=need(TIME), args=[])
    assert set(names) == {"time:get_current_time", "time:convert_time"}
    (info,) = rt.mcp.describe()
    assert info["protocol"] == "2026-07-28" and info["server"].startswith("mcp-time")
    r = await rt.tools.invoke("time:get_current_time", {"timezone": "UTC"})
    assert r.ok and r.output["structured"]["timezone"] == "UTC"
    bad = await rt.tools.invoke("time:get_current_time", {"timezone": "Mars/Olympus"})
    assert bad.error.code == "TOOL_ERROR" and "timezone" in bad.error.message.lower()  # isError is kept
    missing = await rt.tools.invoke("time:get_current_time", {})
    assert missing.error.code == "INVALID_PARAMS"  # checked against the server's schema first
    assert await rt.mcp.add("time", command=need(TIME), args=[]) == names  # idempotent


async def test_server_everything_from_npm_over_stdio(rt):
    names = await rt.mcp.add("every", command="node", args=[need(EVERYTHING), "stdio"])
    assert "every:echo" in names and "every:get-sum" in names
    assert rt.mcp.describe()[0]["protocol"] == "2025-11-25"
    assert (await rt.tools.invoke("every:echo", {"message": "hi"})).output["text"] == "Echo: hi"
    r = await rt.tools.invoke("every:get-sum", {"a": 2, "b": 40})
    assert r.ok and "42" in r.output["text"]


async def test_server_filesystem_from_npm(rt, tmp_path):
    (tmp_path / "hello.txt").write_text("hello from the filesystem server")
    await rt.mcp.add("files", command=need(FILESYSTEM), args=[str(tmp_path)])
    r = await rt.tools.invoke("files:read_text_file", {"path": str(tmp_path / "hello.txt")})
    assert r.ok and "hello from the filesystem server" in r.output["text"]
    denied = await rt.tools.invoke("files:read_text_file", {"path": "/etc/hostname"})
    assert denied.error.code == "TOOL_ERROR"


@pytest.mark.parametrize(("transport", "url_path"), [("streamableHttp", "/mcp"), ("sse", "/sse")])
async def test_server_everything_over_http_transports_on_loopback(rt, transport, url_path):
    port = free_port()
    proc = await start_server(
        "node", "--require", LOOPBACK, need(EVERYTHING), transport, port=port, env={"PORT": str(port)}
    )
    try:
        assert listening_only_on_loopback(port)
        kind = "sse" if transport == "sse" else "http"
        names = await rt.mcp.add("web", url=f"http://127.0.0.1:{port}{url_path}", type=kind)
        assert "web:echo" in names
        assert (await rt.tools.invoke("web:echo", {"message": kind})).output["text"] == f"Echo: {kind}"
    finally:
        await rt.mcp.remove("web")
        await stop_server(proc)


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_our_python_peer_over_http_transports(rt, transport):
    port = free_port()
    proc = await start_server(sys.executable, PEER, f"--{transport}", str(port), port=port)
    try:
        url = f"http://127.0.0.1:{port}/mcp" if transport == "http" else f"http://127.0.0.1:{port}/sse"
        await rt.mcp.add("peer", url=url, type=transport)
        assert (await rt.tools.invoke("peer:add", {"a": 2, "b": 3})).output["structured"] == {"result": 5}
    finally:
        await rt.mcp.remove("peer")
        await stop_server(proc)


# -- faults --------------------------------------------------------------------------------


async def test_a_server_killed_mid_call_gives_provider_unavailable_and_can_be_reconnected(rt):
    await rt.mcp.add("peer", command=sys.executable, args=[PEER])
    t0 = time.monotonic()
    r = await rt.tools.invoke("peer:die", {}, timeout=10)
    assert r.error.code == "PROVIDER_UNAVAILABLE" and time.monotonic() - t0 < 5
    after = await rt.tools.invoke("peer:add", {"a": 1, "b": 1})
    assert after.error.code == "PROVIDER_UNAVAILABLE" and "reconnect" in after.error.message
    await rt.mcp.reconnect("peer")
    assert (await rt.tools.invoke("peer:add", {"a": 1, "b": 1})).output["structured"] == {"result": 2}


async def test_a_server_that_never_answers_times_out_and_stays_usable(rt):
    await rt.mcp.add("peer", command=sys.executable, args=[PEER])
    r = await rt.tools.invoke("peer:sleep", {"seconds": 60}, timeout=0.5)
    assert r.status == loom.ToolStatus.TIMEOUT and r.error.code == "ACTION_TIMEOUT"
    assert (await rt.tools.invoke("peer:add", {"a": 3, "b": 4})).output["structured"] == {"result": 7}


async def test_garbage_on_stdout_is_skipped(rt):
    await rt.mcp.add("noisy", command=sys.executable, args=[PEER, "--garbage"])
    assert (await rt.tools.invoke("noisy:add", {"a": 1, "b": 2})).output["structured"] == {"result": 3}


async def test_unreachable_servers_give_provider_unavailable(rt):
    with pytest.raises(loom.ToolError) as info:
        await rt.mcp.add("ghost", command="/no/such/mcp-server")
    assert info.value.code == "PROVIDER_UNAVAILABLE" and "No such file" in info.value.message
    with pytest.raises(loom.ToolError) as info:
        await rt.mcp.add("nobody", url=f"http://127.0.0.1:{free_port()}/mcp", timeout=5)
    assert info.value.code == "PROVIDER_UNAVAILABLE"
    with pytest.raises(UsageError, match="no MCP server named"):
        await rt.mcp.reconnect("never-added")


async def test_tool_list_changes_are_followed(rt):
    await rt.mcp.add("peer", command=sys.executable, args=[PEER])
    assert "peer:extra" not in rt.tools
    await rt.tools.invoke("peer:grow", {})
    async with asyncio.timeout(5):
        while "peer:extra" not in rt.tools:  # noqa: ASYNC110 - waits for the server's notification
            await asyncio.sleep(0.02)
    assert (await rt.tools.invoke("peer:extra", {"text": "loom"})).output["text"] == "mool"


async def test_removing_a_server_unregisters_its_tools_and_stop_leaves_no_process(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=()) as rt:
        await rt.mcp.add("a", command=sys.executable, args=[PEER])
        await rt.mcp.add("b", command=sys.executable, args=[PEER])
        assert await rt.mcp.remove("a") and "a:add" not in rt.tools and "b:add" in rt.tools
        assert not await rt.mcp.remove("a")
    await asyncio.sleep(0.2)
    alive = [p for p in os.listdir("/proc") if p.isdigit() and PEER in _cmdline(p)]
    assert alive == [], "an MCP server outlived the runtime"


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\x00", " ")
    except OSError:
        return ""


# -- server mode ---------------------------------------------------------------------------


async def test_server_mode_in_process(rt):
    from mcp import Client

    from loom.tools.mcp.server import build_mcp_server

    @loom.tool("math.add")
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    rt.tools.register(add)
    seen = rt.bus.subscribe("from.mcp")
    async with Client(build_mcp_server(rt.tools, rt.bus)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"math.add", "publish"} <= names
        r = await client.call_tool("math.add", {"a": 2, "b": 40})
        assert not r.is_error and r.content[0].text == "42"
        r = await client.call_tool("publish", {"topic": "from.mcp", "json_payload": {"x": 1}})
        assert not r.is_error and '"delivered": 1' in r.content[0].text
        assert (await seen.get()).event.json() == {"x": 1}
        bad = await client.call_tool("publish", {"topic": "bad..topic"})
        assert bad.is_error and "INVALID_PARAMS" in bad.content[0].text


async def test_loom_mcp_serve_as_a_subprocess_over_stdio_and_http(rt, tmp_path):
    (tmp_path / "notes.txt").write_text("served by loom")
    cmd = [sys.executable, "-m", "loom.cli", "mcp", "serve", "--workspace", str(tmp_path)]
    await rt.mcp.add("loom", command=cmd[0], args=cmd[1:])
    r = await rt.tools.invoke("loom:fs.read", {"path": "notes.txt"})
    assert r.ok and "served by loom" in r.output["text"]
    escape = await rt.tools.invoke("loom:fs.read", {"path": "../../etc/passwd"})
    assert escape.error.code == "TOOL_ERROR" and "PERMISSION_DENIED" in escape.error.message
    port = free_port()
    proc = await start_server(*cmd, "--transport", "http", "--port", str(port), port=port)
    try:
        assert listening_only_on_loopback(port)
        await rt.mcp.add("loomhttp", url=f"http://127.0.0.1:{port}/mcp")
        r = await rt.tools.invoke("loomhttp:shell.exec", {"command": "echo", "args": ["over", "http"]})
        assert r.ok and "over http" in r.output["text"]
    finally:
        await rt.mcp.remove("loomhttp")
        await stop_server(proc)
