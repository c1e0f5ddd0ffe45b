"""``%loom cluster``: a kernel joins a real NATS server from a cell, sees it in ``status``, is told clearly
when nothing listens, and serves a local server that ends with the runtime or the kernel."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import loom
from loom.cluster import NatsServer
from tests.test_magics import Kernel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    assert k.run("%load_ext loom\nimport asyncio, loom")["error"] is None
    yield k
    k.close()


@pytest.fixture
def server():
    with NatsServer() as s:
        yield s


@pytest.fixture
def runtime(kernel):
    """The kernel's runtime for one test, stopped (and awaited) afterwards."""
    assert kernel.run("%loom start --name nb")["error"] is None
    yield kernel
    assert kernel.run("p = %loom stop\nawait p")["error"] is None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_without_a_runtime_every_form_says_start_it_first(kernel):
    for form in ("nats://127.0.0.1:4222", "status", "serve", "leave"):
        r = kernel.run(f"%loom cluster {form}")
        assert r["error"] == ("UsageError", "start the runtime first: %loom start"), (form, r)


async def test_joining_from_a_cell_carries_events_both_ways_and_status_shows_the_link(runtime, server):
    kernel = runtime
    async with loom.Loom(name="peer", native_tools=()) as peer:
        await peer.join_cluster(server.url, node="peer", export=["peer.>"], import_=["nb.>"])
        from_nb = peer.bus.subscribe("nb.>")
        r = await asyncio.to_thread(
            kernel.run,
            f"j = %loom cluster {server.url} --node nb --export nb.> --import peer.>,other.*\nlink = await j\n"
            "from_peer = rt.bus.subscribe('peer.>')\nawait rt.bus.publish('nb.hello', loom.Event('greet', b'hi'))",
        )
        assert r["error"] is None and f"joined the cluster at {server.url} as node nb" in r["stdout"], r
        got = await asyncio.wait_for(from_nb.get(), 10)
        assert (got.topic, got.event.payload, got.event.metadata["loom.origin"]) == ("nb.hello", b"hi", "nb")

        await peer.bus.publish("peer.reply", loom.Event("answer", b"back"))
        r = await asyncio.to_thread(
            kernel.run,
            "d = await asyncio.wait_for(from_peer.get(), 10)\n"
            "print(d.topic, d.event.payload, d.event.metadata['loom.origin'])",
        )
        assert r["stdout"].split() == ["peer.reply", "b'back'", "peer"], r

        await asyncio.to_thread(
            kernel.run, "for _ in range(100):\n    if link.nodes(): break\n    await asyncio.sleep(0.1)"
        )
        status = await asyncio.to_thread(kernel.run, "%loom cluster status")
        lines = status["stdout"].splitlines()
        assert lines[0] == f"node nb: connected to {server.url}; export nb.>, import peer.>, other.*", status
        assert lines[1].startswith("exported 1, imported 1, disconnects 0, reconnects 0"), status
        assert lines[-1] == "other nodes: peer (no agents)", status

    again = kernel.run(f"%loom cluster {server.url}")
    assert again["error"][0] == "UsageError" and "already joined the cluster" in again["error"][1], again
    left = kernel.run("j = %loom cluster leave\nawait j\nprint(rt.cluster, link.nc, rt.running)")
    assert left["error"] is None and left["stdout"].split() == ["None", "None", "True"], left  # left, still running
    rejoined = kernel.run(f"j = %loom cluster {server.url}\nlink = await j\nprint(link.connected)")
    assert rejoined["error"] is None and rejoined["stdout"].split()[-1] == "True", rejoined


def test_no_server_says_which_url_and_how_to_start_one_without_a_traceback(runtime):
    kernel = runtime
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        background = kernel.run(f"j = %loom cluster {url}\nawait asyncio.wait([j.task], timeout=15)\nprint(j.done())")
        awaited = kernel.run("await j")
    assert background["stdout"].strip() == "True", background
    # Not awaited: one line from the background task, naming the URL and the way out; never a traceback.
    report = background["stderr"]
    assert "failed" in report and url in report and "loom nats-server" in report, report
    assert "Traceback" not in report and len(report.strip().splitlines()) == 1, report
    # Awaited: IPython's short UsageError, the same message.
    assert awaited["error"][0] == "UsageError", awaited
    assert url in awaited["error"][1] and "start one with `loom nats-server`" in awaited["error"][1], awaited
    assert "Traceback" not in awaited["stderr"]
    # The runtime keeps running, not joined, and may join later.
    after = kernel.run("print(rt.running, rt.cluster)\n%loom cluster status")
    assert after["stdout"].split() == ["True", "None"] and "has not joined a cluster" in after["stderr"], after


def test_bad_patterns_are_refused_at_once(runtime):
    r = runtime.run("%loom cluster nats://127.0.0.1:4222 --export a..b")
    assert r["error"][0] == "UsageError" and r["error"][1].startswith("--export: invalid topic"), r
    r = runtime.run("%loom cluster a b")
    assert r["error"][0] == "UsageError" and "%loom cluster URL" in r["error"][1], r


def test_serve_starts_a_loopback_server_to_join_and_stop_ends_it(kernel):
    assert kernel.run("%loom start --name served")["error"] is None
    r = kernel.run("s = %loom cluster serve\nurl = await s\nprint(nats_server.pid)")
    assert r["error"] is None and "nats-server on nats://127.0.0.1:" in r["stdout"], r
    pid = int(r["stdout"].split()[-1])
    url = r["stdout"].split()[2]
    port = int(url.rsplit(":", 1)[1])
    assert _alive(pid) and "already runs at" in kernel.run("%loom cluster serve")["stderr"]
    joined = kernel.run("j = %loom cluster {url}\nawait j\n%loom cluster status")
    assert f"local server: {url} (running)" in joined["stdout"] and f"connected to {url}" in joined["stdout"], joined

    assert kernel.run("p = %loom stop\nawait p\nprint(rt.state)")["stdout"].strip() == "stopped"
    assert not _alive(pid)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_a_taken_port_is_a_clear_error(kernel):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert kernel.run("%loom start --name taken")["error"] is None
        r = kernel.run(f"s = %loom cluster serve --port {port}\nawait s")
    # The background report, then IPython's short UsageError for the awaited handle: no traceback.
    assert f"UsageError: nats-server exited with code 1 at start (port {port} taken?)" in r["stderr"], r
    assert "Traceback" not in r["stderr"], r
    assert "local server" not in kernel.run("%loom cluster status")["stdout"]
    assert kernel.run("p = %loom stop\nawait p")["error"] is None


def test_kernel_exit_stops_the_served_server():
    k = Kernel()
    try:
        r = k.run("%load_ext loom\n%loom start\ns = %loom cluster serve\nawait s\nprint(nats_server.pid)")
        pid = int(r["stdout"].split()[-1])
        assert _alive(pid), r
    finally:
        k.kc.stop_channels()
        k.km.shutdown_kernel(now=False)  # a graceful exit: what closing the notebook does
    _gone_or_kill(pid)


_EXIT_WITHOUT_STOP = """
import asyncio
from IPython.core.interactiveshell import InteractiveShell

async def main():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "loom")
    shell.run_line_magic("loom", "start")
    await shell.run_line_magic("loom", "cluster serve")
    print(shell.user_ns["nats_server"].pid, flush=True)

asyncio.run(main())  # the interpreter ends with the runtime never stopped
"""


def test_an_interpreter_ending_without_stop_still_stops_the_served_server():
    # ipykernel ends a kernel's children itself at shutdown; an IPython shell or script does not.
    done = subprocess.run([sys.executable, "-c", _EXIT_WITHOUT_STOP], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    _gone_or_kill(int(done.stdout.split()[-1]))


def _gone_or_kill(pid: int) -> None:
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)  # ours: never left running past the test
        pytest.fail(f"nats-server {pid} outlived its interpreter")
