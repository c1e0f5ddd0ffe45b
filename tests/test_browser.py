"""A real browser: JupyterLab runs the quickstart notebook and the BusInspector updates live.

Needs Debian's chromium (``make test`` installs it) and the ``playwright`` package (a dev
dependency; its own browser download is never used). Only loopback traffic is allowed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 with a token, isolated config, serving a copy of the notebooks."""
    served = tmp_path / "served"
    shutil.copytree(ROOT / "notebooks", served)
    state = tmp_path / "jstate"
    settings = state / "settings" / "@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    # windowing off: every cell's output is in the DOM (a widget far down is rendered before it is scrolled to)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        '{"autoStartDefaultKernel": true, "windowingMode": "none"}'
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(state / "cfg"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "IPYTHONDIR": str(state / "ipython"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={served}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.workspaces_dir={state / 'ws'}",
        f"--LabApp.user_settings_dir={state / 'settings'}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not answer within 60 s")
                time.sleep(0.25)
        yield url, token
    finally:
        proc.terminate()  # Lab shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _open_and_run_all(page, url: str, token: str, notebook: str) -> None:
    page.goto(f"{url}/lab/tree/{notebook}?token={token}")
    # Readiness: the kernel connection itself, not DOM indicators (they report idle too early).
    # ... and of *this* notebook: Lab restores earlier tabs, whose kernels may be ready first.
    page.wait_for_function(
        """(nb) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            if (!w || !w.context || w.context.path !== nb) return false;
            const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return k && k.connectionStatus === 'connected' && k.status === 'idle'; }""",
        arg=notebook,
        timeout=90_000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


class Browser:
    """Debian chromium through Playwright, loopback only; collects page errors and blocked requests."""

    def __init__(self, p) -> None:
        self.udd = tempfile.mkdtemp(prefix="chromium-udd-")
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.ctx = p.chromium.launch_persistent_context(
            self.udd,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROME_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        self.page = self.ctx.pages[0] if self.ctx.pages else self.ctx.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)

    def _route(self, r) -> None:
        if r.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
            r.continue_()
        else:
            self.blocked.append(r.request.url)
            r.abort()

    def close(self) -> None:
        self.ctx.close()
        shutil.rmtree(self.udd, ignore_errors=True)
        assert not self.errors, self.errors
        assert not self.blocked, f"the page tried to reach beyond loopback: {self.blocked[:5]}"


def _no_tracebacks(page) -> None:
    cell_errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in cell_errors.all_inner_texts() if "Traceback" in t]
    assert not tracebacks, tracebacks


@contextlib.contextmanager
def _lab_page(lab):
    """A chromium page on the test's JupyterLab and ``run_notebook(name)`` (open it, Run All);
    the browser is closed afterwards, failed or not."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    url, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = Browser(p)
        try:
            yield browser.page, lambda notebook: _open_and_run_all(browser.page, url, token, notebook)
        finally:
            browser.close()


def test_quickstart_runs_in_jupyterlab_and_the_bus_inspector_updates_live(lab):
    with _lab_page(lab) as (page, run_notebook):
        run_notebook("00_quickstart.ipynb")
        page.wait_for_selector(".loom-bus .loom-row", timeout=60_000)
        widget = page.locator(".loom-bus").first
        first_total = int(widget.get_attribute("data-total") or 0)
        page.wait_for_function(
            "(t) => Number(document.querySelector('.loom-bus').dataset.total) >= t + 20",
            arg=first_total,
            timeout=30_000,
        )
        rows = page.locator(".loom-bus .loom-events .loom-row")
        assert rows.count() > 0
        assert "market.price." in rows.first.inner_text()
        assert int(widget.get_attribute("data-total")) >= first_total + 20
        assert "Loom bus" in page.locator(".loom-bus .loom-head").inner_text()
        widget.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "quickstart-lab.png"))
        widget.screenshot(path=str(ARTIFACTS / "bus-inspector.png"))
        _no_tracebacks(page)


def test_agent_and_collaboration_notebooks_render_their_inspectors(lab):
    with _lab_page(lab) as (page, run_notebook):
        run_notebook("01_agents.ipynb")
        page.wait_for_function(
            "() => Number(document.querySelector('.loom-agents')?.dataset.agents) >= 4", timeout=60_000
        )
        agents = page.locator(".loom-agents").first
        assert page.locator(".loom-agents .loom-state-failed").count() >= 1  # the fragile agent
        agents.locator(".loom-row").first.click()  # opens the state tree
        assert "persistent state" in agents.locator(".loom-detail").inner_text()
        agents.scroll_into_view_if_needed()
        agents.screenshot(path=str(ARTIFACTS / "agent-inspector.png"))
        page.wait_for_function(
            "() => Number(document.querySelector('.loom-topology')?.dataset.nodes) >= 4", timeout=30_000
        )
        topo = page.locator(".loom-topology").first
        assert topo.locator("circle").count() >= 4 and topo.locator("path.loom-edge").count() >= 2
        topo.scroll_into_view_if_needed()
        topo.screenshot(path=str(ARTIFACTS / "topology.png"))
        _no_tracebacks(page)

        run_notebook("02_collaboration_patterns.ipynb")
        # `%loom trace on` at its top: the timeline draws the run's spans, one lane per agent
        page.wait_for_selector(".loom-timeline g.loom-lane[data-lane='bob']", timeout=60_000)
        timeline = page.locator(".loom-timeline").first
        lanes = timeline.locator("g.loom-lane").evaluate_all("gs => gs.map(g => g.dataset.lane)")
        assert {"ann", "bob", "cy", "boss"} <= set(lanes) and not any(lane.startswith("agent.") for lane in lanes)
        assert timeline.locator("g.loom-span-g[data-name='collab.contract_net']").count() >= 1
        _no_tracebacks(page)


def test_cognitive_notebook_shows_router_decisions_context_bundle_and_takes_an_approval_click(lab):
    with _lab_page(lab) as (page, run_notebook):
        # Run All, then the last cell once more on its own: the front end's widget manager asks the
        # kernel for its widgets with a shell request that waits behind queued cells, so a widget
        # answers clicks only once no cell is queued (under Run All the approval times out: denied).
        run_notebook("04_cognitive_agent.ipynb")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')].some(e => "
            "e.innerText.includes('I was not allowed to do that'))",
            timeout=120_000,
        )
        page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
            timeout=60_000,
        )
        last = page.locator(".jp-Notebook .jp-CodeCell").last
        last.locator(".cm-content").click()
        page.keyboard.press("Shift+Enter")
        # the dangerous call waits in the approval panel until a human clicks
        page.wait_for_selector(".loom-approval .loom-approve", timeout=30_000)
        page.locator(".loom-approval .loom-approve").first.click()
        page.wait_for_selector(".loom-approval .loom-state-running", timeout=20_000)
        assert "approved: butler → door.open" in page.locator(".loom-approval").first.inner_text()
        page.wait_for_function(
            "() => document.querySelectorAll('.loom-router tr.loom-row').length >= 4", timeout=30_000
        )
        router = page.locator(".loom-router").first
        assert router.locator("tr[data-route='cloud']").count() >= 1
        router.locator("tr[data-route='cloud']").first.click()
        assert "providers considered" in router.locator(".loom-detail").inner_text()
        router.scroll_into_view_if_needed()
        router.screenshot(path=str(ARTIFACTS / "router-inspector.png"))
        context = page.locator(".loom-context").first
        assert context.locator(".loom-bar-row[data-part='memory']").count() == 1
        assert int(context.get_attribute("data-tokens") or 0) > 0
        assert "tiktoken" in context.inner_text() or "estimate" in context.inner_text()
        context.scroll_into_view_if_needed()
        context.screenshot(path=str(ARTIFACTS / "context-inspector.png"))
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')].some(e => "
            "e.innerText.includes('Done: the kitchen door is open.'))",
            timeout=30_000,
        )
        _no_tracebacks(page)


def test_tracing_notebook_shows_real_spans_the_topology_and_metrics(lab):
    with _lab_page(lab) as (page, run_notebook):
        run_notebook("07_tracing_and_replay.ipynb")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')].some(e => "
            "e.innerText.includes('the panel replayed'))",
            timeout=120_000,
        )
        page.wait_for_function(  # the last cell (its checks) ran too
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
            timeout=60_000,
        )
        _no_tracebacks(page)

        # TraceTimeline: one lane per agent, spans on a time axis, a click shows the span
        timeline = page.locator(".loom-timeline").first
        lanes = timeline.evaluate("el => [...el.querySelectorAll('g.loom-lane')].map(g => g.dataset.lane)")
        assert {"coordinator", "analyst", "auditor", "llm"} <= set(lanes) and len(lanes) == len(set(lanes))
        assert not [lane for lane in lanes if lane.startswith("agent.")]
        assert timeline.locator("text.loom-tick").count() >= 3 and " ms" in (
            timeline.locator("text.loom-tick").nth(1).text_content() or ""
        )
        assert timeline.locator("g.loom-span-g[data-name='llm.generate']").count() >= 2
        assert timeline.locator("rect.loom-span-error").count() == 1  # the failed fx.rate call
        # pick the trace with the error in the filter: only its spans remain, zoomed to it
        all_items = int(timeline.get_attribute("data-items") or 0)
        option = timeline.locator("select.loom-trace-filter option", has_text="1 errors")
        timeline.locator("select.loom-trace-filter").select_option(option.get_attribute("value"))
        page.wait_for_function(
            "(n) => Number(document.querySelector('.loom-timeline').dataset.items) < n", arg=all_items, timeout=20_000
        )
        assert timeline.locator("rect.loom-span-error").count() == 1
        timeline.locator("g.loom-span-g[data-name='tool.invoke'] rect").first.click()
        page.wait_for_function(
            "() => document.querySelector('.loom-timeline .loom-span-detail .loom-attrs')"
            "?.innerText.includes('loom.tool')",
            timeout=20_000,
        )
        detail = timeline.locator(".loom-span-detail")
        assert "tool.invoke" in detail.locator(".loom-subhead").first.inner_text()
        assert "span events" in detail.inner_text() and "bus events of this trace" in detail.inner_text()
        assert detail.locator(".loom-trace-events tr.loom-row").count() >= 3
        # a publish span links to the bus inspector: it filters the inspector to the span's topic
        timeline.locator("g.loom-span-g[data-label='publish trip.audit'] rect").first.click()
        page.wait_for_selector(".loom-timeline .loom-show-bus", timeout=20_000)
        timeline.locator(".loom-show-bus").click()
        bus = page.locator(".loom-bus").first
        only = (
            "(t) => { const rows = [...document.querySelector('.loom-bus').querySelectorAll('.loom-events .loom-row')];"
            " return rows.length > 0 && rows.every(r => r.cells[1].innerText === t); }"
        )
        page.wait_for_function(only, arg="trip.audit", timeout=20_000)
        assert bus.locator(".loom-events .loom-row").count() == 3
        timeline.scroll_into_view_if_needed()
        timeline.screenshot(path=str(ARTIFACTS / "trace-timeline.png"))

        # Topology: agents and topics, publish edges, a click on a topic filters the bus inspector
        topo = page.locator(".loom-topology").first
        assert topo.locator("g.loom-node[data-kind='agent']").count() == 3
        assert topo.locator("g.loom-node[data-kind='topic']").count() >= 4
        publish = topo.locator("path.loom-edge-publish[data-source='agent:coordinator']")
        assert publish.count() >= 2 and float(publish.first.get_attribute("stroke-width")) > 1
        # 3 requests and 3 replies in; 3 questions to the analyst, 3 audits, 3 answers out
        assert "in 6 · out 9" in (topo.locator("g.loom-node[data-node-id='agent:coordinator']").text_content() or "")
        topo.scroll_into_view_if_needed()
        topo.screenshot(path=str(ARTIFACTS / "topology.png"))
        topo.locator("g.loom-node[data-node-id='topic:trip.plan'] circle").click()
        page.wait_for_function(only, arg="trip.plan", timeout=20_000)
        assert topo.locator("path.loom-edge-chosen").count() == 1  # the coordinator subscribes (the notebook sends)

        # MetricsView: a sparkline per series, rates, the tools with their errors, LLM tokens
        metrics = page.locator(".loom-metrics").first
        assert metrics.locator("svg.loom-spark polyline").count() >= 5
        assert int(metrics.get_attribute("data-published") or 0) > 0
        rates = metrics.evaluate(
            "el => Math.max(...[...el.querySelectorAll('.loom-card[data-series=published] polyline')]"
            ".map(p => p.getAttribute('points').split(' ').length))"
        )
        assert rates >= 2
        assert "published/s" in metrics.locator(".loom-card[data-series='published']").inner_text()
        tools = metrics.locator(".loom-tools").inner_text()
        assert "fx.rate" in tools and "math.add" in tools
        assert "scripted" in metrics.locator(".loom-llm").inner_text()
        metrics.scroll_into_view_if_needed()
        metrics.screenshot(path=str(ARTIFACTS / "metrics-view.png"))
        assert page.locator(".loom-replay").first.get_attribute("data-state") == "done"
        _no_tracebacks(page)


def test_voice_notebook_shows_the_transcript_wake_and_answer_in_the_voice_panel(lab):
    with _lab_page(lab) as (page, run_notebook):
        run_notebook("06_voice.ipynb")
        page.wait_for_selector(".loom-voice .loom-voice-answer", timeout=120_000)
        panel = page.locator(".loom-voice").first
        kinds = panel.locator(".loom-voice-line").evaluate_all("rows => rows.map(r => r.className)")
        assert any("loom-voice-heard" in k for k in kinds) and any("loom-voice-wake" in k for k in kinds)
        heard = panel.locator(".loom-voice-heard .loom-voice-text").first.inner_text().lower()
        assert "what time is it" in heard
        assert panel.locator(".loom-voice-answer .loom-voice-text").first.inner_text().startswith("It is ")
        assert panel.locator(".loom-voice-meter .loom-voice-level").count() == 1
        panel.scroll_into_view_if_needed()
        panel.screenshot(path=str(ARTIFACTS / "voice-panel.png"))
        _no_tracebacks(page)
