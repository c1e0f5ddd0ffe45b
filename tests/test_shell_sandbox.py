"""shell.exec in bubblewrap: escapes through arguments, symlinks and the host, locally and remotely.

Before the sandbox, each escape below returned ACTION_OK with text from outside the workspace:
``date -f/etc/passwd`` printed /etc/passwd in its error messages (a path glued to a short option
was not checked), ``cat link`` / ``cat etcdir/passwd`` read through a symlink inside the
workspace (relative arguments were not resolved), ``grep -R`` followed such a symlink without it
ever being an argument, and all of it worked over the bridge and ``loom mcp serve`` too. Every
test names the secret it must not see (a file beside the workspace, /etc/passwd, an environment
variable) and checks that no process of the call is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loom import Loom, ToolResult, UsageError
from loom.tools.native import ShellTool

PASSWD_LINE = Path("/etc/passwd").read_text().splitlines()[0]  # e.g. root:x:0:0:root:/root:/bin/bash


@dataclass
class Host:
    ws: Path  # the workspace
    secret: str  # the text of a file beside the workspace
    name: str  # that file's name

    def leaks(self, *texts: str) -> bool:
        return any(self.secret in t or PASSWD_LINE in t for t in texts)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A workspace holding symlinks that lead out of it, and a secret file beside it."""
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is missing: `make sysdeps` installs it")
    secret, name = f"loom-secret-{uuid.uuid4().hex}", f"outside-{uuid.uuid4().hex}.txt"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / name).write_text(secret + "\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("inside\n")
    os.symlink(outside / name, ws / "link")  # a file outside
    os.symlink(outside, ws / "outdir")  # a directory outside
    os.symlink("/etc", ws / "etcdir")  # a system directory
    return Host(ws, secret, name)


def leftovers(ws: Path) -> list[str]:
    """Processes still running for a call in ``ws``: bwrap names it on its command line, the command runs in it."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue  # gone, or a zombie already
        if str(ws) in cmdline or cwd == str(ws) or cwd.startswith(f"{ws}/"):
            found.append(f"{pid}: {cmdline.replace(chr(0), ' ')}")
    return found


@contextlib.asynccontextmanager
async def running(ws: Path, *, tool: ShellTool | None = None, **options: object) -> AsyncIterator[Loom]:
    """A runtime on ``ws`` (optionally with a hand-built shell tool) that must leave no task and no process."""
    before = asyncio.all_tasks()
    async with Loom(workspace=ws, native_tools=("shell.exec", "fs.read"), tool_options=options) as rt:
        if tool is not None:
            rt.tools.register(tool)
        yield rt
    await asyncio.sleep(0)
    leaked = {t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()}
    assert not leaked, f"tasks leaked: {[t.get_name() for t in leaked]}"
    assert leftovers(ws) == []


def raw(rt: Loom, allowed: set[str], **kw: object) -> ShellTool:
    """A shell tool without argument checks: what the sandbox alone lets a command see."""
    return ShellTool(rt.workspace, allowed=allowed, check_args=False, **kw)


async def sh(rt: Loom, command: str, *args: str, timeout: float = 20) -> ToolResult:
    return await rt.tools.invoke("shell.exec", {"command": command, "args": list(args)}, timeout=timeout)


# -- the argument checks (second layer) -------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("date", ["-f/etc/passwd"]),
        ("date", ["-f../outside/{name}"]),
        ("date", ["-flink"]),  # a relative value glued to the option, naming a symlink that leads out
        ("grep", ["-nf/etc/passwd", "notes.txt"]),  # the value glued after a cluster of flags
        ("grep", ["-" + "n" * 300 + "f/etc/passwd", "notes.txt"]),
        ("grep", ["--file=/etc/passwd", "notes.txt"]),
        ("head", ["-n1", "--", "etcdir/passwd"]),
    ],
)
async def test_a_path_glued_to_an_option_is_checked(host, command, args):
    async with running(host.ws) as rt:
        r = await sh(rt, command, *(a.format(name=host.name) for a in args))
        assert r.error is not None and r.error.code == "PERMISSION_DENIED", r
        assert "outside the workspace" in r.error.message and not host.leaks(r.error.message)


@pytest.mark.parametrize(
    "args",
    [["link"], ["./link"], ["etcdir/passwd"], ["outdir/{name}"], ["notes.txt", "link"], ["-v", "etcdir/"]],
)
async def test_a_symlink_in_the_workspace_that_leads_outside_is_refused(host, args):
    async with running(host.ws) as rt:
        r = await sh(rt, "cat", *(a.format(name=host.name) for a in args))
        assert r.error is not None and r.error.code == "PERMISSION_DENIED", r
        ok = await sh(rt, "cat", "notes.txt")
        assert ok.ok and ok.output["stdout"] == "inside\n" and ok.output["sandbox"] == "bwrap"


async def test_symlinks_that_no_argument_names_dangle_in_the_sandbox(host):
    """``grep -R`` and ``ls -LR`` follow every symlink under ``.``; only the sandbox stops that."""
    async with running(host.ws) as rt:
        grep = await sh(rt, "grep", "-R", "-e", PASSWD_LINE[:5], "-e", host.secret, ".")
        assert grep.ok and grep.output["exit_code"] != 0 and not host.leaks(grep.output["stdout"])
        listing = await sh(rt, "ls", "-LR", ".")
        assert listing.ok and "notes.txt" in listing.output["stdout"]
        assert not host.leaks(listing.output["stdout"], listing.output["stderr"])
        assert host.name not in listing.output["stdout"] and "passwd" not in listing.output["stdout"]


async def test_ordinary_commands_work_in_the_sandbox(host):
    async with running(host.ws) as rt:
        expected = {
            ("cat", "notes.txt"): "inside\n",
            ("grep", "-n", "ins", "notes.txt"): "1:inside\n",
            ("cut", "-c1-3", "notes.txt"): "ins\n",
            ("wc", "-l", "notes.txt"): "1 notes.txt\n",
            ("head", "-n1", "./notes.txt"): "inside\n",
            ("tr", "a-z", "A-Z"): "",  # stdin is closed
            ("pwd",): f"{rt.workspace.root}\n",
            ("uname", "-n"): "loom-sandbox\n",
            ("basename", "/a/b.txt"): None,  # an absolute path outside: refused by the checks
        }
        for (command, *args), stdout in expected.items():
            r = await sh(rt, command, *args)
            if stdout is None:
                assert r.error.code == "PERMISSION_DENIED"
            else:
                assert r.ok and (r.output["exit_code"], r.output["stdout"]) == (0, stdout), (command, r.output)
        listing = (await sh(rt, "ls", "-la")).output["stdout"]
        assert "notes.txt" in listing and "etcdir -> /etc" in listing  # a symlink is listed, not followed
        assert (await sh(rt, "date", "-u", "+%Y")).output["stdout"].strip().isdigit()
        assert "ASCII text" in (await sh(rt, "file", "notes.txt")).output["stdout"]


# -- the sandbox (first layer): what a command sees when no argument check stops it ---------------


async def test_proc_shows_the_sandbox_and_only_the_scrubbed_environment(host, monkeypatch):
    token = f"loom-token-{uuid.uuid4().hex}"
    monkeypatch.setenv("LOOM_SECRET_TOKEN", token)
    async with running(host.ws) as rt:
        refused = await sh(rt, "cat", "/proc/1/environ")
        assert refused.error.code == "PERMISSION_DENIED"
        rt.tools.register(raw(rt, {"cat", "ls"}))
        for path in ("/proc/1/environ", "/proc/self/environ"):
            r = await sh(rt, "cat", path)
            env = dict(kv.split("=", 1) for kv in r.output["stdout"].split("\x00") if kv)
            assert r.output["exit_code"] == 0 and env["HOME"] == str(rt.workspace.root), r
            assert set(env) <= {"PATH", "LANG", "LC_ALL", "HOME", "PWD"} and token not in r.output["stdout"]
        pids = await sh(rt, "ls", "/proc")
        assert sorted(int(p) for p in pids.output["stdout"].split() if p.isdigit()) == [1, 2]  # bwrap's init, ls
        status = await sh(rt, "cat", "/proc/self/status")
        assert "CapEff:\t0000000000000000" in status.output["stdout"]  # --cap-drop ALL
        rt.tools.register(raw(rt, {"unshare"}))
        nested = await sh(rt, "unshare", "--user", "--map-root-user", "true")
        assert nested.output["exit_code"] != 0 and "unshare failed" in nested.output["stderr"]  # --disable-userns


async def test_ls_slash_shows_no_host_directory(host):
    async with running(host.ws) as rt:
        assert (await sh(rt, "ls", "/")).error.code == "PERMISSION_DENIED"
        rt.tools.register(raw(rt, {"ls", "cat"}))
        top = set((await sh(rt, "ls", "/")).output["stdout"].split())
        ws_top = rt.workspace.root.parts[1]
        assert top <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr", ws_top}
        assert not {"root", "home", "work", "opt", "var", "srv", "mnt", "sys"} & (top - {ws_top})
        etc = await sh(rt, "ls", "-a", "/etc")
        assert set(etc.output["stdout"].split()) <= {".", "..", "ld.so.cache", "localtime"}
        passwd = await sh(rt, "cat", "/etc/passwd", "/root/.bashrc", f"{host.ws.parent}/outside/{host.name}")
        assert passwd.output["exit_code"] != 0 and passwd.output["stdout"] == ""
        assert passwd.output["stderr"].count("No such file or directory") == 3


async def test_find_slash_through_a_custom_allow_list_finds_nothing_outside(host):
    async with running(host.ws, shell_allowed={"find"}) as rt:
        assert (await sh(rt, "find", "/", "-name", "passwd")).error.code == "PERMISSION_DENIED"
        followed = await sh(rt, "find", "-L", ".", "-name", "*passwd*")  # args pass the checks; -L follows links
        assert followed.ok and "etcdir/passwd" not in followed.output["stdout"]
        rt.tools.register(raw(rt, {"find"}))
        found = (await sh(rt, "find", "/", "-name", "passwd")).output["stdout"].splitlines()
        assert found and all(p.startswith("/usr/") for p in found), found  # /usr/bin/passwd and its docs only
        mine = await sh(rt, "find", "/", "-name", "notes.txt")
        assert mine.output["stdout"].splitlines() == [str(rt.workspace.root / "notes.txt")]  # it did search
        theirs = await sh(rt, "find", "/", "-name", host.name)
        assert theirs.output["stdout"] == "" and host.name not in theirs.output["stderr"]


async def test_the_workspace_is_read_only_unless_the_tool_option_says_so(host):
    async with running(host.ws, shell_allowed={"touch"}) as rt:
        r = await sh(rt, "touch", "new.txt")
        assert r.output["exit_code"] != 0 and "Read-only file system" in r.output["stderr"]
        assert not (host.ws / "new.txt").exists()
    async with running(host.ws, shell_allowed={"touch"}, shell_writable=True) as rt:
        assert (await sh(rt, "touch", "new.txt")).output["exit_code"] == 0 and (host.ws / "new.txt").exists()


# -- limits and the end of a call ------------------------------------------------------------------


async def test_endless_output_is_capped_and_the_command_ended(host):
    async with running(host.ws, shell_allowed={"yes"}) as rt:
        t0 = time.monotonic()
        r = await sh(rt, "yes", f"spam-{host.secret[:8]}", timeout=30)
        assert r.ok and r.output["truncated"] and r.output["killed"] == "output limit", r
        assert len(r.output["stdout"]) == rt.tools.get("shell.exec").max_output and time.monotonic() - t0 < 10
        assert leftovers(host.ws) == []


async def test_a_command_past_its_timeout_is_killed_with_everything_it_started(host):
    async with running(host.ws, shell_allowed={"sleep", "setsid"}) as rt:
        t0 = time.monotonic()
        call = asyncio.create_task(sh(rt, "sleep", "30", timeout=1))
        async with asyncio.timeout(5):
            while not any("sleep 30" in p for p in leftovers(host.ws)):  # noqa: ASYNC110 - /proc has no event
                await asyncio.sleep(0.02)  # (and the check does see a running call)
        r = await call
        assert r.error.code == "ACTION_TIMEOUT" and time.monotonic() - t0 < 5
        assert leftovers(host.ws) == []
        # a child that leaves the process group (a new session) and closes nothing still dies with the call
        r = await sh(rt, "setsid", "-f", "sleep", "30", timeout=5)
        assert r.ok and r.output["exit_code"] == 0 and time.monotonic() - t0 < 5
        assert leftovers(host.ws) == []


async def test_cpu_memory_process_and_file_size_limits_apply_inside(host):
    async with running(host.ws) as rt:
        rt.tools.register(raw(rt, {"cat"}))
        limits = (await sh(rt, "cat", "/proc/self/limits")).output["stdout"]
        rows = {line[:26].strip(): line[26:].split()[:2] for line in limits.splitlines()[1:]}
        assert rows["Max cpu time"] == ["30", "31"]
        assert rows["Max address space"] == [str(1 << 30)] * 2
        assert rows["Max processes"] == ["64", "64"]
        assert rows["Max file size"] == [str(16 << 20)] * 2
        assert rows["Max core file size"] == ["0", "0"]
        rt.tools.register(raw(rt, {"sha256sum"}, limits={"cpu_seconds": 1}))
        t0 = time.monotonic()
        spin = await sh(rt, "sha256sum", "/dev/zero", timeout=30)
        assert spin.ok and spin.output["exit_code"] == 128 + 24 and time.monotonic() - t0 < 10  # SIGXCPU
        rt.tools.register(raw(rt, {"nl"}, limits={"memory_bytes": 64 << 20}))
        hog = await sh(rt, "nl", "/dev/zero", timeout=30)  # one endless line
        assert hog.output["exit_code"] != 0 and "memory exhausted" in hog.output["stderr"]


# -- without bubblewrap ----------------------------------------------------------------------------


async def test_without_bubblewrap_shell_exec_refuses_and_says_how_to_fix_it(host, tmp_path, monkeypatch):
    missing = str(tmp_path / "no-such-bwrap")
    async with running(host.ws, shell_bwrap=missing) as rt:
        r = await sh(rt, "echo", "hi")
        assert r.error.code == "PROVIDER_UNAVAILABLE"
        for hint in ("bubblewrap", missing, "apt-get install bubblewrap", "shell_sandbox", "LOOM_SHELL_SANDBOX"):
            assert hint in r.error.message
    monkeypatch.setenv("LOOM_BWRAP", missing)
    async with running(host.ws) as rt:
        assert (await sh(rt, "echo", "hi")).error.code == "PROVIDER_UNAVAILABLE"
    monkeypatch.delenv("LOOM_BWRAP")
    async with running(host.ws, shell_bwrap="/usr/bin/false") as rt:  # installed but cannot build a sandbox
        r = await sh(rt, "echo", "hi")
        assert r.error.code == "PROVIDER_UNAVAILABLE" and "cannot build the sandbox" in r.error.message


async def test_opting_out_runs_with_argument_checks_only_and_warns(host, tmp_path, monkeypatch, caplog):
    missing = str(tmp_path / "no-such-bwrap")
    with caplog.at_level(logging.WARNING, logger="loom.tools"):
        async with running(host.ws, shell_sandbox="none", shell_bwrap=missing) as rt:
            r = await sh(rt, "echo", "hi")
            assert r.ok and r.output["stdout"] == "hi\n" and r.output["sandbox"] == "none"
            assert "argument checks only" in r.output["warning"]
            for args in (["-f/etc/passwd"], ["-flink"]):
                assert (await sh(rt, "date", *args)).error.code == "PERMISSION_DENIED"
            assert (await sh(rt, "cat", "etcdir/passwd")).error.code == "PERMISSION_DENIED"
    assert any("without the OS sandbox" in rec.getMessage() for rec in caplog.records)
    monkeypatch.setenv("LOOM_SHELL_SANDBOX", "none")
    monkeypatch.setenv("LOOM_BWRAP", missing)
    async with running(host.ws) as rt:
        assert (await sh(rt, "echo", "hi")).output["sandbox"] == "none"
    with pytest.raises(UsageError, match="shell_sandbox"):
        Loom(workspace=host.ws, tool_options={"shell_sandbox": "off"})
    with pytest.raises(UsageError, match="check_args"):
        ShellTool(rt.workspace, sandbox="none", check_args=False)
    with pytest.raises(UsageError, match="cpu_seconds"):
        ShellTool(rt.workspace, limits={"cpu_seconds": 0})


# -- the same rules remotely -----------------------------------------------------------------------


async def test_escapes_are_refused_over_the_bridge(host):
    from loom.bridge._grpc import grpc
    from loom.bridge._pb.loom.v1 import action_pb2, bridge_pb2_grpc

    async with running(host.ws) as rt:
        server = await rt.start_bridge(port=0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = bridge_pb2_grpc.BridgeStub(channel)

            async def forward(command: str, *args: str) -> action_pb2.ActionResult:
                payload = json.dumps({"command": command, "args": list(args)}).encode()
                call = action_pb2.ActionCall(id=uuid.uuid4().hex, capability="shell.exec", payload=payload)
                return await stub.ForwardAction(call, timeout=30)

            for args in (["date", "-f/etc/passwd"], ["cat", "link"], ["cat", "etcdir/passwd"], ["cat", "/etc/passwd"]):
                r = await forward(*args)
                assert (r.status, r.error.code) == (action_pb2.ACTION_ERROR, "PERMISSION_DENIED"), args
                assert not host.leaks(r.error.message, r.output.decode())
            grep = await forward("grep", "-R", "-e", PASSWD_LINE[:5], "-e", host.secret, ".")
            assert grep.status == action_pb2.ACTION_OK
            out = json.loads(grep.output)
            assert out["sandbox"] == "bwrap" and not host.leaks(out["stdout"], out["stderr"])


@pytest.mark.slow
async def test_escapes_are_refused_through_loom_mcp_serve(host):
    from mcp import Client, StdioServerParameters

    server = StdioServerParameters(
        command=sys.executable, args=["-m", "loom.cli", "mcp", "serve", "--workspace", str(host.ws)]
    )
    async with Client(server) as client:
        for args in (["date", "-f/etc/passwd"], ["cat", "link"], ["cat", "etcdir/passwd"]):
            r = await client.call_tool("shell.exec", {"command": args[0], "args": args[1:]})
            text = "".join(c.text for c in r.content)
            assert r.is_error and "PERMISSION_DENIED: " in text, (args, text)
            assert not host.leaks(text)
        grep = await client.call_tool(
            "shell.exec", {"command": "grep", "args": ["-R", "-e", PASSWD_LINE[:5], "-e", host.secret, "."]}
        )
        out = json.loads("".join(c.text for c in grep.content))
        assert not grep.is_error and out["sandbox"] == "bwrap" and out["exit_code"] != 0
        assert not host.leaks(out["stdout"], out["stderr"])
    assert leftovers(host.ws) == []
