"""ToolRegistry and the native tools (sandbox rules, HTTP tools against a local server)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

import loom
from loom import Event, Loom, ToolStatus, UsageError, tool

DATA = Path(__file__).parent / "data"


@pytest.fixture
async def rt(tmp_path):
    """A runtime with every native tool, confined to a fresh workspace."""
    (tmp_path / "ws").mkdir()
    async with Loom(workspace=tmp_path / "ws", native_tools=loom.tools.native.ALL_NATIVE) as runtime:
        yield runtime


@tool("math.add")
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# -- registry ------------------------------------------------------------------------------


async def test_the_shape_of_the_api(tmp_path):
    async with Loom(workspace=tmp_path / "work") as rt:
        rt.tools.register(add)
        r = await rt.tools.invoke("math.add", {"a": 2, "b": 3}, timeout=5)
        assert (r.status, r.output, r.error) == (ToolStatus.OK, 5, None) and r.ok
        (tmp_path / "work" / "notes.txt").write_text("hello")
        r = await rt.tools.invoke("fs.read", {"path": "notes.txt"})
        assert r.output["content"] == "hello"
        r = await rt.tools.invoke("shell.exec", {"command": "ls", "args": ["-l"]})
        assert r.ok and "notes.txt" in r.output["stdout"]
        assert {"math.add", "fs.read", "shell.exec", "weather.get", "web.search"} <= set(rt.tools.names())
        assert "fs.write" not in rt.tools and "fs.list" not in rt.tools  # opt-in


async def test_error_codes_are_produced_for_real(rt):
    @tool("boom")
    def boom() -> None:
        raise RuntimeError("kaput")

    @tool("slow")
    async def slow() -> None:
        await asyncio.sleep(10)

    for t in (add, boom, slow):
        rt.tools.register(t)
    missing = await rt.tools.invoke("no.such.tool", {})
    assert (missing.status, missing.error.code) == (ToolStatus.ERROR, "NOT_FOUND")
    bad = await rt.tools.invoke("math.add", {"a": "two", "b": 3})
    assert bad.error.code == "INVALID_PARAMS" and "a" in bad.error.details
    raised = await rt.tools.invoke("boom")
    assert raised.error.code == "CAPABILITY_ERROR" and "kaput" in raised.error.message
    late = await rt.tools.invoke("slow", timeout=0.05)
    assert (late.status, late.error.code) == (ToolStatus.TIMEOUT, "ACTION_TIMEOUT")
    with pytest.raises(loom.ToolError) as info:
        late.unwrap()
    assert info.value.code == "ACTION_TIMEOUT"
    with pytest.raises(UsageError, match="timeout"):
        await rt.tools.invoke("math.add", {"a": 1, "b": 1}, timeout=0)
    assert (await rt.tools.invoke("math.add", [1, 2])).error.code == "INVALID_PARAMS"


async def test_a_timeout_cancels_the_work(rt):
    state = {"cancelled": False}

    @tool("forever")
    async def forever() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    rt.tools.register(forever)
    await rt.tools.invoke("forever", timeout=0.05)
    assert state["cancelled"]


async def test_json_schema_validation_for_tools_without_their_own_validator(rt):
    class Echo:
        name, description = "echo", "echo a word"
        schema = {"type": "object", "properties": {"word": {"type": "string", "maxLength": 5}}, "required": ["word"]}

        async def execute(self, args):
            return args["word"]

    rt.tools.register(Echo())
    assert (await rt.tools.invoke("echo", {"word": "hi"})).output == "hi"
    r = await rt.tools.invoke("echo", {"word": "much too long"})
    assert r.error.code == "INVALID_PARAMS" and "word" in r.error.details


async def test_idempotency_by_call_id(rt):
    calls = []

    @tool("count")
    async def count() -> int:
        calls.append(1)
        await asyncio.sleep(0.01)
        return len(calls)

    rt.tools.register(count)
    first, concurrent = await asyncio.gather(
        rt.tools.invoke("count", call_id="c1"), rt.tools.invoke("count", call_id="c1")
    )
    again = await rt.tools.invoke("count", call_id="c1")
    assert first is concurrent is again and len(calls) == 1
    assert (await rt.tools.invoke("count", call_id="c2")).output == 2


async def test_per_tool_concurrency_limit(rt):
    active, peak = 0, 0

    @tool("limited", max_concurrency=2)
    async def limited() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1

    rt.tools.register(limited)
    results = await asyncio.gather(*(rt.tools.invoke("limited") for _ in range(6)))
    assert all(r.ok for r in results) and peak == 2


async def test_every_invocation_is_an_event_on_the_bus(rt):
    rt.tools.register(add)
    calls, results = rt.bus.subscribe("tool.call"), rt.bus.subscribe("tool.result")
    r = await rt.tools.invoke("math.add", {"a": 1, "b": 2}, caller="agent.x")
    call, result = (await calls.get()).event.json(), (await results.get()).event.json()
    assert call["id"] == result["id"] == r.id and call["caller"] == "agent.x" and result["status"] == "ACTION_OK"
    await rt.tools.invoke("math.add", {"a": "x"})
    assert (await results.get()).event.json()["error"]["code"] == "INVALID_PARAMS"


async def test_list_tools_in_openai_function_calling_format(rt):
    rt.tools.register(add)
    fns = {f["function"]["name"]: f for f in rt.tools.list_tools("openai")}
    assert fns["math_add"]["type"] == "function"
    assert fns["math_add"]["function"]["parameters"]["required"] == ["a", "b"]
    assert rt.tools.resolve_openai_name("math_add") == "math.add"
    assert rt.tools.list_tools()[0]["provider"] == "native"
    with pytest.raises(UsageError, match="unknown format"):
        rt.tools.list_tools("xml")


async def test_registry_changes_refresh_the_capability_directory(rt):
    rt.tools.register(add)
    assert rt.capabilities.get("math.add").version == "1.0"
    rt.tools.unregister("math.add")
    assert rt.capabilities.get("math.add") is None
    with pytest.raises(UsageError, match="cannot register"):
        rt.tools.register(lambda: None)
    with pytest.raises(UsageError, match="already registered"):
        rt.tools.register(add) and rt.tools.register(add, replace=False)


# -- fs.* ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["../outside.txt", "../../etc/passwd", "/etc/passwd", "sub/../../outside.txt", "~/outside.txt", "link-out/x.txt"],
)
async def test_fs_refuses_paths_that_leave_the_workspace(rt, tmp_path, path):
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path, rt.workspace.root / "link-out")
    for name, args in (
        ("fs.read", {"path": path}),
        ("fs.write", {"path": path, "content": "x"}),
        ("fs.list", {"path": path}),
    ):
        r = await rt.tools.invoke(name, args)
        assert r.error is not None and r.error.code == "PERMISSION_DENIED", (name, path, r)
    assert (tmp_path / "outside.txt").read_text() == "secret"


async def test_fs_refuses_a_symlinked_file_and_nul_bytes(rt, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", rt.workspace.root / "innocent.txt")
    assert (await rt.tools.invoke("fs.read", {"path": "innocent.txt"})).error.code == "PERMISSION_DENIED"
    assert (await rt.tools.invoke("fs.read", {"path": "a\x00b"})).error.code == "PERMISSION_DENIED"
    assert (await rt.tools.invoke("fs.read", {"path": ""})).error.code == "INVALID_PARAMS"


async def test_fs_read_write_list_inside_the_workspace(rt):
    w = await rt.tools.invoke("fs.write", {"path": "notes/today.md", "content": "# hi\n"})
    assert w.output == {"path": "notes/today.md", "bytes_written": 5, "appended": False}
    await rt.tools.invoke("fs.write", {"path": "notes/today.md", "content": "more\n", "append": True})
    r = await rt.tools.invoke("fs.read", {"path": str(rt.workspace.root / "notes" / "today.md")})  # absolute, inside
    assert r.output["content"] == "# hi\nmore\n" and r.output["encoding"] == "utf-8"
    (rt.workspace.root / "blob.bin").write_bytes(b"\xff\x00\x01")
    assert (await rt.tools.invoke("fs.read", {"path": "blob.bin"})).output["encoding"] == "base64"
    listing = await rt.tools.invoke("fs.list", {"path": "."})
    assert {e["name"]: e["is_dir"] for e in listing.output["entries"]} == {"blob.bin": False, "notes": True}
    assert (await rt.tools.invoke("fs.read", {"path": "missing.txt"})).error.code == "INVALID_PARAMS"
    assert (await rt.tools.invoke("fs.read", {"path": "notes"})).error.code == "INVALID_PARAMS"


async def test_fs_size_caps(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=("fs.read", "fs.write")) as rt:
        rt.workspace.max_read_bytes, rt.workspace.max_write_bytes = 10, 10
        (tmp_path / "big.txt").write_text("x" * 100)
        r = await rt.tools.invoke("fs.read", {"path": "big.txt"})
        assert r.output["truncated"] is True and len(r.output["content"]) == 10 and r.output["size"] == 100
        assert (await rt.tools.invoke("fs.write", {"path": "y", "content": "y" * 11})).error.code == "PERMISSION_DENIED"


# -- shell.exec ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["python3", "python", "sh", "bash", "sed", "awk", "find", "env", "git", "xargs", "/bin/ls", "rm"]
)
async def test_shell_refuses_interpreters_editors_and_paths(rt, command):
    r = await rt.tools.invoke("shell.exec", {"command": command, "args": ["-c", "true"]})
    assert r.error.code == "PERMISSION_DENIED" and "not allowed" in r.error.message


async def test_shell_runs_argv_in_the_workspace_with_a_scrubbed_environment(rt, monkeypatch):
    monkeypatch.setenv("LOOM_SECRET_TOKEN", "do-not-leak")
    r = await rt.tools.invoke("shell.exec", {"command": "echo", "args": ["$HOME", ";", "rm", "-rf", "*"]})
    assert r.output["stdout"] == "$HOME ; rm -rf *\n" and r.output["exit_code"] == 0  # no shell expansion
    env = await rt.tools.invoke("shell.exec", {"command": "cat", "args": ["../../proc/self/environ"]})
    assert env.error.code == "PERMISSION_DENIED"
    pwd = await rt.tools.invoke("shell.exec", {"command": "pwd"})
    assert pwd.output["stdout"].strip() == str(rt.workspace.root)
    (rt.workspace.root / "f.txt").write_text("a\nb\n")
    wc = await rt.tools.invoke("shell.exec", {"command": "wc", "args": ["-l", "f.txt"]})
    assert wc.output["stdout"].split()[0] == "2"
    cat = await rt.tools.invoke("shell.exec", {"command": "cat", "args": ["/proc/self/environ"]})
    assert cat.error.code == "PERMISSION_DENIED"  # a path argument outside the workspace
    fails = await rt.tools.invoke("shell.exec", {"command": "ls", "args": ["no-such-file"]})
    assert fails.ok and fails.output["exit_code"] != 0 and fails.output["stderr"]


async def test_shell_output_is_capped(rt):
    shell = rt.tools.get("shell.exec")
    shell.max_output = 1000
    (rt.workspace.root / "big.txt").write_text("y" * 100_000)
    r = await rt.tools.invoke("shell.exec", {"command": "cat", "args": ["big.txt"]})
    assert r.output["truncated"] and len(r.output["stdout"]) == 1000 and r.output["exit_code"] == 0


async def test_shell_kills_the_process_group_on_timeout(tmp_path):
    async with Loom(workspace=tmp_path, native_tools=("shell.exec",), tool_options={"shell_allowed": {"sleep"}}) as rt:
        t0 = time.monotonic()
        r = await rt.tools.invoke("shell.exec", {"command": "sleep", "args": ["30"]}, timeout=0.3)
        assert r.error.code == "ACTION_TIMEOUT" and time.monotonic() - t0 < 5
        # argv[0] is the full path (/usr/bin/sleep); bwrap's own command line ends the same way
        alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).endswith("sleep\x0030\x00")]
        assert [p for p in alive if _cwd(p) == str(rt.workspace.root)] == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


# -- weather.get / web.search against recorded responses on 127.0.0.1 ----------------------------


class Recorded(BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802 - the http.server API
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.seen.append((url.path, q, dict(self.headers)))
        kind, value = self.server.routes.get(url.path, ("status", 404))
        if kind == "sleep":
            time.sleep(value)
            kind, value = "file", "open_meteo_geocoding_paris.json"
        if kind == "status":
            self.send_response(value)
            self.end_headers()
            self.wfile.write(b"upstream trouble")
            return
        body = (DATA / value).read_bytes() if kind == "file" else value.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorded)
    server.routes, server.seen = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _weather_rt(tmp_path, base, timeout=2.0):
    options = {
        "weather": {"geocoding_url": f"{base}/geo", "forecast_url": f"{base}/forecast", "timeout": timeout},
        "web_search": {"duckduckgo_url": f"{base}/ddg", "brave_url": f"{base}/brave", "timeout": timeout},
    }
    return Loom(workspace=tmp_path, native_tools=("weather.get", "web.search"), tool_options=options)


async def test_weather_from_recorded_open_meteo_answers(tmp_path, http):
    server, base = http
    server.routes = {
        "/geo": ("file", "open_meteo_geocoding_paris.json"),
        "/forecast": ("file", "open_meteo_forecast_paris.json"),
    }
    async with _weather_rt(tmp_path, base) as rt:
        r = await rt.tools.invoke("weather.get", {"location": "Paris"})
        assert r.output == {
            "location": "Paris, France",
            "latitude": 48.85341,
            "longitude": 2.3488,
            "temperature": 7.4,
            "units": "celsius",
            "conditions": "light rain",
            "humidity": 88,
            "wind_speed": 11.2,
        }
        assert server.seen[0][1]["name"] == "Paris" and server.seen[1][1]["latitude"] == "48.85341"
        server.routes["/geo"] = ("file", "open_meteo_geocoding_empty.json")
        assert (await rt.tools.invoke("weather.get", {"location": "Atlantis"})).error.code == "INVALID_PARAMS"
        assert (await rt.tools.invoke("weather.get", {"location": ""})).error.code == "INVALID_PARAMS"


@pytest.mark.parametrize(
    ("route", "code"),
    [
        (("status", 503), "UPSTREAM_ERROR"),
        (("status", 404), "UPSTREAM_ERROR"),
        (("text", "not json{"), "UPSTREAM_ERROR"),
        (("sleep", 1.5), "ACTION_TIMEOUT"),
    ],
)
async def test_weather_failures_have_the_right_codes(tmp_path, http, route, code):
    server, base = http
    server.routes = {"/geo": route, "/forecast": ("file", "open_meteo_forecast_paris.json")}
    async with _weather_rt(tmp_path, base, timeout=0.5) as rt:
        r = await rt.tools.invoke("weather.get", {"location": "Paris"})
        assert r.error.code == code, r


async def test_web_search_duckduckgo_by_default_and_brave_with_a_key(tmp_path, http, monkeypatch):
    server, base = http
    server.routes = {"/ddg": ("file", "duckduckgo_python.json"), "/brave": ("file", "brave_python.json")}
    monkeypatch.delenv("BRAVE_API_KEY", raising=False)
    async with _weather_rt(tmp_path, base) as rt:
        r = await rt.tools.invoke("web.search", {"query": "python", "limit": 3})
        assert r.output["engine"] == "duckduckgo" and r.output["count"] == 3
        assert [x["url"] for x in r.output["results"]] == [
            "https://en.wikipedia.org/wiki/Python_(programming_language)",
            "https://duckduckgo.com/Guido_van_Rossum",
            "https://duckduckgo.com/CPython",
        ]
        monkeypatch.setenv("BRAVE_API_KEY", "test-key")
        r = await rt.tools.invoke("web.search", {"query": "python"})
        assert r.output["engine"] == "brave" and r.output["results"][0]["title"] == "Welcome to Python.org"
        assert server.seen[-1][2].get("X-Subscription-Token") == "test-key"
        server.routes["/brave"] = ("status", 500)
        assert (await rt.tools.invoke("web.search", {"query": "python"})).error.code == "UPSTREAM_ERROR"
        assert (await rt.tools.invoke("web.search", {"query": "python", "limit": 99})).error.code == "INVALID_PARAMS"


# -- agents use the same registry ----------------------------------------------------------


async def test_agent_tool_actions_and_ctx_tool_go_through_the_registry(rt):
    rt.tools.register(add)
    results = rt.bus.subscribe("tool.result")

    async def handler(ctx, topic, event):
        await ctx.emit("answers", await ctx.tool("math.add", {"a": 20, "b": 22}))

    answers = rt.bus.subscribe("answers")
    await loom.Agent("calc", topics=["ask"], on_event=handler).start()
    await rt.bus.publish("ask", Event("q"))
    assert (await answers.get()).event.json() == 42
    assert (await results.get()).event.json()["tool"] == "math.add"


def test_native_tools_reject_unknown_names(tmp_path):
    with pytest.raises(UsageError, match="unknown native tools"):
        Loom(workspace=tmp_path, native_tools=("fs.delete",))
    with pytest.raises(UsageError, match="workspace"):
        Loom(workspace="")
    assert json.loads(json.dumps(loom.tools.native.DEFAULT_NATIVE)) == [
        "shell.exec",
        "fs.read",
        "weather.get",
        "web.search",
    ]
