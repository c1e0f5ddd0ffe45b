"""The %loom magics in a real IPython kernel (started and shut down by the test)."""

from __future__ import annotations

from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.slow


class Kernel:
    def __init__(self) -> None:
        self.km, self.kc = start_new_kernel(kernel_name="python3")

    def run(self, code: str, timeout: float = 30) -> dict[str, Any]:
        out: dict[str, Any] = {"stdout": "", "stderr": "", "error": None, "data": []}

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind in ("execute_result", "display_data"):
                out["data"].append(content["data"])
            elif kind == "error":
                out["error"] = (content["ename"], content["evalue"])

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        for payload in reply["content"].get("payload", []):  # `?` help comes as a pager payload
            if "data" in payload:
                out["data"].append(payload["data"])
        if out["error"] is None and out["stderr"].startswith("UsageError: "):
            out["error"] = ("UsageError", out["stderr"][len("UsageError: ") :].strip())  # IPython's short form
        return out

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel():
    k = Kernel()
    assert k.run("%load_ext loom")["error"] is None
    yield k
    k.close()


def test_start_shows_a_status_panel_and_is_idempotent(kernel):
    first = kernel.run("%loom start --name magic")
    assert first["error"] is None
    assert "Loom magic" in first["data"][0]["text/html"]
    again = kernel.run("%loom start")
    assert "already running" in again["stderr"]
    st = kernel.run("st = %loom status\nprint(st['running'], st['name'], rt.name)")
    assert st["stdout"].split() == ["True", "magic", "magic"]


def test_bad_arguments_give_usage_errors(kernel):
    kernel.run("%loom start --name magic")
    assert kernel.run("%loom nope")["error"][0] == "UsageError"
    assert "inspect needs one of" in kernel.run("%loom inspect")["error"][1]
    assert "name the agent" in kernel.run("%loom inspect context")["error"][1]
    assert "no agent 'ghost'" in kernel.run("%loom inspect context ghost")["error"][1]
    assert "cell magic" in kernel.run("%loom agent x")["error"][1]
    assert "Run Loom inside this kernel" in kernel.run("%loom?")["data"][0]["text/plain"]


def test_a_cell_becomes_an_agent_and_rerunning_it_replaces_it(kernel):
    cell = (
        "%%loom agent echo --topics ping.*\n"
        "async def on_event(ctx, topic, event):\n"
        "    await ctx.emit('pong', event.payload + b'{n}')"
    )
    assert kernel.run(cell.replace("{n}", "1"))["error"] is None
    r = kernel.run(
        "import asyncio, loom\nawait asyncio.sleep(0.05)\nn_subs = len(rt.bus.subscriptions())\n"
        "pongs = rt.bus.subscribe('pong')\nawait rt.bus.publish('ping.a', loom.Event('t', b'x'))\n"
        "print((await pongs.get()).event.payload)"
    )
    assert r["stdout"].strip() == "b'x1'", r
    assert kernel.run(cell.replace("{n}", "2"))["error"] is None
    r = kernel.run(
        "await asyncio.sleep(0.05)\nawait rt.bus.publish('ping.b', loom.Event('t', b'y'))\n"
        "print((await pongs.get()).event.payload, len(rt.bus.subscriptions()) == n_subs + 1)"
    )
    assert r["stdout"].split() == ["b'y2'", "True"], r
    bad = kernel.run("%%loom agent broken --topics a\nx = 1")
    assert "must define `async def on_event" in bad["error"][1]
    bad_topics = kernel.run("%%loom agent t2 --topics 'a..b'\nasync def on_event(ctx, topic, event): pass")
    assert bad_topics["error"] is not None


def test_inspect_opens_widgets_with_a_static_fallback(kernel):
    for what in ("bus", "agents", "traces", "topology", "context echo"):
        r = kernel.run(f"w = %loom inspect {what}\nw")
        assert r["error"] is None, (what, r)
        data = r["data"][-1]
        assert "application/vnd.jupyter.widget-view+json" in data and "loom-widget" in data["text/html"]


def test_bridge_magic_serves_and_says_where(kernel):
    kernel.run("%loom start --name magic")
    r = kernel.run("b = %loom bridge --port 0\nprint(await b)")
    assert r["error"] is None and "bridge serving on 127.0.0.1:" in r["stdout"], r
    assert r["stdout"].strip().splitlines()[-1].startswith("127.0.0.1:")  # the awaited handle returns the address
    again = kernel.run("%loom bridge --port 0")
    assert "already serves" in again["stderr"]


def test_trace_on_collects_spans_of_the_running_runtime_and_off_stops(kernel):
    kernel.run("%loom start --name magic")
    assert "%loom trace on|off|status" in kernel.run("%loom trace maybe")["error"][1]
    on = kernel.run("%loom trace on")
    assert on["error"] is None and "tracing on" in on["stdout"], on
    r = kernel.run(
        "import loom\nsub = rt.bus.subscribe('magic.t')\nawait rt.bus.publish('magic.t', loom.Event('x'))\n"
        "sub.close()\nprint(sorted({s.name for s in collector.spans()}))"
    )
    assert "publish" in r["stdout"], r
    assert "tracing on" in kernel.run("%loom trace status")["stdout"]
    assert "tracing off" in kernel.run("%loom trace off")["stdout"]
    r = kernel.run("n = len(collector)\nawait rt.bus.publish('magic.t', loom.Event('x'))\nprint(len(collector) - n)")
    assert r["stdout"].strip() == "0", r


def test_mic_without_an_input_device_says_to_use_a_wav_and_a_bad_wav_is_named(kernel, tmp_path):
    kernel.run("%loom start --name magic")
    r = kernel.run("%loom mic --device 0")
    assert r["error"] is not None and "no audio input device" in r["error"][1] and "--wav" in r["error"][1], r
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    r = kernel.run(f"%loom mic --wav {bad}")
    assert r["error"] is not None and "bad.wav" in r["error"][1], r
    assert "no voice pipeline is running" in kernel.run("%loom mic stop")["stderr"]


def test_stop_is_awaitable_idempotent_and_leaves_no_task(kernel):
    r = kernel.run(
        "import asyncio\np = %loom stop\nawait p\n"
        "print(rt.state, sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith('loom.')))"
    )
    assert r["stdout"].split() == ["stopped", "[]"], r
    assert "not running" in kernel.run("%loom stop")["stderr"]
    assert "not running" in kernel.run("%loom status")["stderr"]
    restarted = kernel.run("%loom start --name again")
    assert "Loom again" in restarted["data"][0]["text/html"]
