"""`loom mcp serve` over HTTP and SSE follows the bridge's exposure rules: a token when asked for
(and on any non-loopback address), Host/Origin checks against DNS rebinding, no shell.exec by
default off loopback. Real `loom mcp serve` processes on 127.0.0.1, real HTTP, the real mcp client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

import loom
from loom import UsageError
from loom.tools.mcp.exposure import allowed_hosts, served_native_tools
from loom.tools.mcp.server import serve

pytestmark = pytest.mark.slow

PEER = Path(__file__).resolve().parent / "peers" / "mcp_peer.py"
SERVE = [sys.executable, "-m", "loom.cli", "mcp", "serve"]
TOKEN = "s3cret-token"
PATHS = {"http": "/mcp", "sse": "/sse"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def read(path: Path) -> str:
    return path.read_text()


def processes_running(path: Path) -> list[str]:
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if str(path) in Path(f"/proc/{pid}/cmdline").read_text().replace("\x00", " "):
                alive.append(pid)
    return alive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def loom_mcp(tmp_path: Path, transport: str, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[str]:
    """A `loom mcp serve` process; yields its base URL once it listens; stopped (SIGTERM) after."""
    port = free_port()
    out = (tmp_path / f"serve-{port}.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        *SERVE, "--transport", transport, "--port", str(port), "--workspace", str(tmp_path), *args,
        env={**os.environ, **(env or {})}, stdout=out, stderr=out,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.returncode is not None:
                pytest.fail(f"loom mcp serve exited with {proc.returncode}: {read(Path(out.name))}")
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                await w.wait_closed()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nothing listens on 127.0.0.1:{port}")
                await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stopping = time.monotonic()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        out.close()
    log = read(Path(out.name))
    assert proc.returncode == 0, f"SIGTERM should stop it cleanly; exit {proc.returncode}:\n{log}"
    assert time.monotonic() - stopping < 10, "open streams get 3 s, then it stops"
    assert "loom mcp ready on" in log


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def probe(base: str, transport: str, headers: dict[str, str]) -> int:
    """The status of the transport's first request (initialize over http, the GET stream over sse)."""
    async with httpx2.AsyncClient(timeout=10) as http:
        if transport == "http":
            r = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **headers})
            return r.status_code
        async with http.stream("GET", f"{base}/sse", headers=headers) as r:
            return r.status_code  # an accepted stream stays open: closed here, unread


def mcp_client(base: str, transport: str, token: str | None) -> tuple[Client, httpx2.AsyncClient]:
    headers = bearer(token) if token else {}
    http = create_mcp_http_client(headers=headers)
    if transport == "http":
        return Client(streamable_http_client(f"{base}/mcp", http_client=http)), http
    return Client(sse_client(f"{base}/sse", headers=headers)), http


# -- the token -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_without_the_token_or_with_a_wrong_one_every_request_is_401(tmp_path, transport):
    async with loom_mcp(tmp_path, transport, "--token", TOKEN) as base, httpx2.AsyncClient(timeout=10) as http:
        for headers in ({}, bearer("wrong"), bearer(TOKEN + "x"), {"Authorization": f"Basic {TOKEN}"}):
            assert await probe(base, transport, headers) == 401
        if transport == "sse":  # the POST endpoint of the SSE transport, too
            r = await http.post(f"{base}/messages/?session_id=0123456789abcdef0123456789abcdef", json=INITIALIZE)
            assert r.status_code == 401
        r = await http.get(f"{base}/anything-else")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_with_the_right_token_the_mcp_client_lists_and_calls_tools(tmp_path, transport):
    (tmp_path / "notes.txt").write_text("served with a token")
    async with loom_mcp(tmp_path, transport, "--token", TOKEN) as base:
        client, http = mcp_client(base, transport, TOKEN)
        async with http, client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"fs.read", "shell.exec", "publish"} <= names  # loopback: the standard set
            r = await client.call_tool("fs.read", {"path": "notes.txt"})
            assert not r.is_error and "served with a token" in r.content[0].text
            escape = await client.call_tool("fs.read", {"path": "../../etc/passwd"})
            assert escape.is_error and "PERMISSION_DENIED" in escape.content[0].text  # still confined


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_a_loom_runtime_reaches_a_protected_server_by_its_configured_headers(tmp_path, transport):
    from loom import Loom, ToolError

    async with loom_mcp(tmp_path, transport, "--token", TOKEN) as base, Loom(workspace=tmp_path, native_tools=()) as rt:
        url = f"{base}{PATHS[transport]}"
        with pytest.raises(ToolError) as refused:
            await rt.mcp.add("guarded", url=url, type=transport, timeout=10)
        assert refused.value.code == "PROVIDER_UNAVAILABLE"  # without the header: refused (401)
        os.environ["TEST_LOOM_MCP_TOKEN"] = TOKEN  # ${VAR} in a header value is expanded, as in env
        try:
            config = {
                "guarded": {
                    "url": url,
                    "type": transport,
                    "headers": {"Authorization": "Bearer ${TEST_LOOM_MCP_TOKEN}"},
                }
            }
            (server,) = loom.tools.mcp.parse_mcp_config(config)
        finally:
            del os.environ["TEST_LOOM_MCP_TOKEN"]
        assert TOKEN not in repr(server)  # a token stays out of reprs and logs
        names = await rt.mcp.add(config=server)
        assert "guarded:publish" in names
        out = await rt.tools.invoke("guarded:publish", {"topic": "from.afar", "payload": "hi"})
        assert out.ok, out.error


async def test_loom_mcp_token_is_read_from_the_environment(tmp_path):
    async with loom_mcp(tmp_path, "http", env={"LOOM_MCP_TOKEN": TOKEN}) as base:
        assert await probe(base, "http", {}) == 401
        assert await probe(base, "http", bearer(TOKEN)) == 200


# -- Host and Origin ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_forged_host_and_origin_are_refused_on_loopback(tmp_path, transport, token):
    args = ("--token", token) if token else ()
    auth = bearer(token) if token else {}
    async with loom_mcp(tmp_path, transport, *args) as base:
        port = base.rsplit(":", 1)[1]
        for forged in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", f"0.0.0.0:{port}"):
            assert await probe(base, transport, {**auth, "Host": forged}) == 421, forged
        for forged in (
            "http://evil.example",
            f"http://evil.example:{port}",
            "null",
            f"http://127.0.0.1.evil.example:{port}",
        ):
            assert await probe(base, transport, {**auth, "Origin": forged}) == 403, forged
        if transport == "sse":  # the POST endpoint checks too, before looking at the session
            async with httpx2.AsyncClient(timeout=10) as http:
                r = await http.post(
                    f"{base}/messages/?session_id={'0' * 32}", json=INITIALIZE, headers={**auth, "Host": "evil.example"}
                )
            assert r.status_code == 421
        for name in ("127.0.0.1", "localhost", "[::1]"):  # what a local client or page really sends
            assert (
                await probe(base, transport, {**auth, "Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"})
                == 200
            )


async def test_allowed_host_adds_a_name_and_nothing_else(tmp_path):
    async with loom_mcp(tmp_path, "http", "--allowed-host", "loom.lan") as base:
        port = base.rsplit(":", 1)[1]
        assert await probe(base, "http", {"Host": f"loom.lan:{port}"}) == 200
        assert await probe(base, "http", {"Host": f"loom.lan.evil.example:{port}"}) == 421


# -- non-loopback addresses --------------------------------------------------------------------


def test_a_non_loopback_host_without_a_token_is_refused_at_start(tmp_path):
    refused = subprocess.run(
        [*SERVE, "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port()), "--workspace", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "LOOM_MCP_TOKEN"},
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.startswith("loom mcp serve: refusing to serve MCP on '0.0.0.0' without a token")
    assert "--token" in refused.stderr and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


async def test_forced_it_starts_on_0_0_0_0_without_shell_exec(tmp_path):
    # The one test that binds a non-loopback address: for as long as listing the tools takes.
    async with loom_mcp(tmp_path, "http", "--host", "0.0.0.0", "--force") as base, Client(f"{base}/mcp") as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert "shell.exec" not in names and {"fs.read", "publish"} <= names


def test_the_default_tool_set_leaves_out_shell_exec_off_loopback_unless_named():
    assert "shell.exec" not in served_native_tools("http", "0.0.0.0")
    assert "shell.exec" not in served_native_tools("sse", "192.0.2.7")
    assert "shell.exec" in served_native_tools("http", "0.0.0.0", ["fs.read", "shell.exec"])
    assert served_native_tools("http", "0.0.0.0", ["fs.read"]) == ("fs.read",)
    assert "shell.exec" in served_native_tools("http", "127.0.0.1")
    assert "shell.exec" in served_native_tools("stdio", "0.0.0.0")  # stdio has no address


def test_accepted_host_names_are_the_bound_ones_with_the_port():
    assert allowed_hosts("127.0.0.1", 8766) == ["127.0.0.1:8766", "localhost:8766", "[::1]:8766"]
    assert allowed_hosts("0.0.0.0", 8766) == ["127.0.0.1:8766", "localhost:8766", "[::1]:8766"]  # not 0.0.0.0
    assert allowed_hosts("192.0.2.7", 9, ["loom.lan", "[fe80::1]:7"])[3:] == [
        "192.0.2.7:9",
        "loom.lan:9",
        "[fe80::1]:7",
    ]
    for bad in ("", "http://x", "a:b", "[::1", "a b"):
        with pytest.raises(UsageError, match="allowed host"):
            allowed_hosts("127.0.0.1", 1, [bad])


async def test_serve_refuses_before_starting_anything():
    with pytest.raises(UsageError, match="refusing to serve MCP on '0.0.0.0' without a token"):
        await serve("http", host="0.0.0.0", port=0)
    with pytest.raises(UsageError, match="refusing"):
        await serve("sse", host="::", port=0)
    with pytest.raises(UsageError, match="visible ASCII"):
        await serve("http", port=0, token="two words")
    with pytest.raises(UsageError, match="unknown MCP transport"):
        await serve("carrier-pigeon")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UsageError, match="cannot listen on 127.0.0.1"):
            await serve("http", port=busy.getsockname()[1])


async def test_serve_in_process_on_a_free_port_until_cancelled(tmp_path):
    urls: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(serve("http", port=0, token=TOKEN, on_ready=urls.put_nowait, workspace=tmp_path))
    try:
        url = await asyncio.wait_for(urls.get(), 30)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        base = url.removesuffix("/mcp")
        assert await probe(base, "http", bearer(TOKEN)) == 200
        assert await probe(base, "http", {}) == 401
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with socket.socket() as s:  # nothing listens there any more (TIME_WAIT aside)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(base.rsplit(":", 1)[1])))


async def test_sigterm_stops_the_runtime_and_the_mcp_servers_it_connected(tmp_path):
    peer = tmp_path / "served_peer.py"  # a path of this test's own, to find its process by
    shutil.copy(PEER, peer)
    env = {"LOOM_MCP_SERVERS": json.dumps({"peer": {"command": sys.executable, "args": [str(peer)]}})}
    async with loom_mcp(tmp_path, "http", env=env) as base, Client(f"{base}/mcp") as client:
        r = await client.call_tool("peer__add", {"a": 2, "b": 3})  # proxied through the runtime
        assert not r.is_error and "5" in r.content[0].text
        assert processes_running(peer)
    assert not processes_running(peer), "the runtime did not stop its MCP server"


async def test_sigterm_stops_it_cleanly_even_with_a_stream_open(tmp_path):
    async with httpx2.AsyncClient(timeout=30) as http:
        async with loom_mcp(tmp_path, "sse") as base:
            stream = await http.send(http.build_request("GET", f"{base}/sse"), stream=True)
            assert stream.status_code == 200
        # loom_mcp sent SIGTERM while the stream was open, and checked a clean exit in time
        await stream.aclose()


# -- stdio ---------------------------------------------------------------------------------------


async def test_stdio_is_unaffected_no_token_no_host_rules(tmp_path):
    (tmp_path / "notes.txt").write_text("over stdio")
    env = {**os.environ, "LOOM_MCP_TOKEN": TOKEN}  # ignored: stdio is the parent's pipes
    params = StdioServerParameters(
        command=sys.executable, args=[*SERVE[1:], "--workspace", str(tmp_path), "--host", "0.0.0.0"], env=env
    )
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "shell.exec" in names
            r = await client.call_tool("fs.read", {"path": "notes.txt"})
            assert not r.is_error and "over stdio" in r.content[0].text
