"""Thinking agents: the loop's own cost per ReAct step, get_context at 10 000 messages, store writes.

    python bench/cognitive.py [--runs 5] [--goals 200]

JSON lines:
- `react_step_loop`: CPU µs per ReAct step (one model call and what follows it) of the loop itself
  against a model that answers in-process at once (no HTTP, no model latency): what the loop adds to
  each model call. A run is a goal, 1 or 4 tool steps, a final answer. Split into the prompt
  assembly (`get_context`, once per run) and the rest (tool call through the registry, context
  writes, step records); memory store and SQLite store.
- `react_step_http`: the same steps through the real openai client to the scripted
  OpenAI-compatible server in another process (CPU of this process only: client + HTTP + loop).
- `get_context` (10 000 stored messages, SQLite on disk) and `store_writes` from bench/_context_bench.py.
Each figure is the median over `--runs` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _context_bench import bench_get_context, bench_store_writes  # noqa: E402

import loom  # noqa: E402
from loom.cognitive import CognitiveConfig, LLMClient, LLMConfig, LLMResponse, SimpleCognitiveLoop, ToolCall, Usage  # noqa: E402
from loom.context import AgentContext  # noqa: E402


class InstantModel:
    """Answers at once, in-process: ``tool_steps`` tool calls, then a final answer."""

    def __init__(self, tool_steps: int = 1) -> None:
        self.tool_steps = tool_steps
        self.n = 0

    async def chat(self, messages, **kw) -> LLMResponse:
        self.n += 1
        done = 0
        for m in reversed(messages):  # tool results of this run (after its last user message)
            if m["role"] == "user":
                break
            done += m["role"] == "tool"
        if done >= self.tool_steps:
            return LLMResponse(text="the sum is 5", usage=Usage(40, 5), provider="instant")
        call = ToolCall(id=f"c{self.n}", name="math_add", arguments='{"a": 2, "b": 3}')
        return LLMResponse(tool_calls=(call,), finish_reason="tool_calls", usage=Usage(40, 8), provider="instant")


@loom.tool("math.add")
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


async def react_steps(model, runs: int, store: str, stream: bool) -> dict:
    """Per-step CPU of ``runs`` runs, split into the prompt assembly (get_context, once per run) and the rest."""
    async with loom.Loom(native_tools=()) as rt:
        rt.tools.register(add)
        with tempfile.TemporaryDirectory() as tmp:
            if store == "memory":
                ctx = AgentContext("bench", "a")
            else:
                ctx = AgentContext.with_defaults("bench", "a", path=Path(tmp) / "c.db")
            config = CognitiveConfig(stream=stream, max_steps=20)
            loop = SimpleCognitiveLoop(config, model, rt.tools, events=rt.bus).with_context(ctx)
            await loop.run("warm up: what is 2 + 3?")
            assembly = [0.0]
            get_context = ctx.get_context

            async def timed(*a, **kw):
                c = time.process_time()
                try:
                    return await get_context(*a, **kw)
                finally:
                    assembly[0] += time.process_time() - c

            ctx.get_context = timed
            steps = 0
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(runs):
                answer = await loop.run(f"question {i}: what is 2 + 3?")
                assert answer.ok, answer.error
                steps += answer.model_calls
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            await loop.aclose()
    return {
        "steps": steps,
        "cpu_us_per_step": cpu / steps * 1e6,
        "cpu_us_per_step_without_get_context": (cpu - assembly[0]) / steps * 1e6,
        "get_context_cpu_us_per_run": assembly[0] / runs * 1e6,
        "wall_us_per_step": wall / steps * 1e6,
    }


def start_server() -> tuple[subprocess.Popen, str]:
    code = (
        "import sys, time\n"
        "from tests.peers.scripted_openai import ScriptedOpenAI, text, tool_call\n"
        "def policy(body):\n"
        "    if body['messages'][-1]['role'] == 'tool':\n"
        "        return text('the sum is 5')\n"
        "    return tool_call('math_add', {'a': 2, 'b': 3})\n"
        "srv = ScriptedOpenAI(responder=policy).start()\n"
        "print(srv.base_url, flush=True)\n"
        "sys.stdin.read()\n"
        "srv.stop()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def react_http(base_url: str, steps: int) -> dict:
    client = LLMClient(LLMConfig(name="scripted", base_url=base_url, api_key="x", model="m"))
    try:
        return await react_steps(client, steps, "memory", stream=True)
    finally:
        await client.aclose()


def median_of(results: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in results), 3) for k in results[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--goals", type=int, default=200, help="runs of the loop per measurement")
    ap.add_argument("--messages", type=int, default=10_000)
    args = ap.parse_args()
    for store in ("memory", "sqlite"):
        for tool_steps in (1, 4):
            results = [
                asyncio.run(react_steps(InstantModel(tool_steps), args.goals, store, stream=False))
                for _ in range(args.runs)
            ]
            line = {"bench": "react_step_loop", "store": store, "tool_steps_per_run": tool_steps, "runs": args.runs}
            print(json.dumps({**line, **median_of(results)}))
    proc, url = start_server()
    try:
        results = [asyncio.run(react_http(url, args.goals // 4)) for _ in range(args.runs)]
        print(json.dumps({"bench": "react_step_http", "runs": args.runs, **median_of(results)}))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    ctx = [numbers(asyncio.run(bench_get_context(args.messages))) for _ in range(3)]
    print(json.dumps({"bench": "get_context", "repeats": 3, "calls_each": 50, **median_of(ctx)}))
    writes = [numbers(bench_store_writes()) for _ in range(3)]
    print(json.dumps({"bench": "store_writes", "repeats": 3, **median_of(writes)}))


def numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, int | float) and k != "runs"}


if __name__ == "__main__":
    main()
