"""Context engineering figures: get_context over a large history, and store writes per second.

    python bench/_context_bench.py [--messages 10000] [--runs 50] [--writes 5000] [--repeat 3]

JSON lines: `context_get` (p50/p90 ms of AgentContext.get_context with N stored messages of
Zipf-distributed text in a SQLite store on disk: recency + BM25 retrieval, ranking, the
8000-token window, with tiktoken counts stored at write time), `context_get_semantic` (the same
with the HashingEmbedder), `context_get` with a uniform 30-word vocabulary (BM25's worst case:
every word in ~40 % of the messages), and `context_writes` (SQLiteContextStore.add per second on
disk, WAL, synchronous=NORMAL; and records per second, which add the tiktoken count). bench/cognitive.py imports the
functions; run alone, each figure is the median over --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "en", "dar", "pol", "gri", "us", "ba", "te", "xo"]


class _Text:
    """Synthetic text with a Zipf word distribution (word r has weight 1/r), as natural language has:
    a few words ("the") in most messages, most words rare. ``vocabulary`` words in all; ``uniform``
    makes every word equally likely instead."""

    def __init__(self, vocabulary: int, seed: int, *, uniform: bool = False) -> None:
        self.rng = random.Random(seed)
        words = {"".join(self.rng.choice(_SYLLABLES) for _ in range(1 + i % 3)) + str(i) for i in range(vocabulary)}
        self.words = sorted(words)
        self.rng.shuffle(self.words)
        weights = (1.0 if uniform else 1.0 / (r + 1) for r in range(len(self.words)))
        self.cum = list(itertools.accumulate(weights))

    def sentence(self, n: int = 16) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.cum, k=n))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


async def bench_get_context(
    n: int = 10000, runs: int = 50, *, semantic: bool = False, vocabulary: int = 5000, uniform: bool = False
) -> dict:
    """p50/p90 milliseconds of ``get_context`` with ``n`` stored messages (SQLite on disk).

    Messages are 16 words of Zipf-distributed text over ``vocabulary`` words; each trigger is 6
    such words. A tiny uniform vocabulary (30 words, ``uniform=True``) is the worst case for BM25:
    every word is in ~40 % of the messages, too few to be left out as uninformative, so bm25()
    scores nearly every row.
    """
    from loom.context import AgentContext, HashingEmbedder, SQLiteContextStore, default_tokenizer

    text = _Text(vocabulary, seed=7, uniform=uniform)
    tok = default_tokenizer()
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        store = SQLiteContextStore(Path(tmp) / "context.db")
        try:
            embedder = HashingEmbedder() if semantic else None
            ctx = AgentContext("bench", "agent", store, embedder=embedder)
            for i in range(n):
                await ctx.record_message("user" if i % 2 == 0 else "assistant", f"{i}: {text.sentence()}")
            await ctx.get_context("warm up")  # first call loads the vectors / warms SQLite's cache
            lat = []
            for _ in range(runs):
                trigger = text.sentence(6)
                t0 = time.perf_counter()
                bundle = await ctx.get_context(trigger, system="You are a helpful agent.")
                lat.append((time.perf_counter() - t0) * 1000)
            await ctx.aclose()
        finally:
            store.close()
    return {
        "bench": "context_get_semantic" if semantic else "context_get",
        "messages": n,
        "vocabulary": f"{vocabulary} {'uniform' if uniform else 'zipf'}",
        "runs": runs,
        "p50_ms": round(statistics.median(lat), 3),
        "p90_ms": round(_percentile(lat, 0.9), 3),
        "tokenizer": tok.name,
        "kept": bundle.retrieved["kept"],
        "prompt_tokens": bundle.tokens["total"],
    }


def bench_store_writes(n: int = 5000) -> dict:
    """Writes per second to a SQLite context store on disk: bare ``add`` and whole records
    (item + token count + add, as ``record_message`` does without the event loop)."""
    from loom.context import ContextItem, SQLiteContextStore, default_tokenizer

    text = _Text(5000, seed=11)
    tok = default_tokenizer()
    texts = [text.sentence() for _ in range(n)]
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        store = SQLiteContextStore(Path(tmp) / "context.db")
        try:
            items = [
                ContextItem.new("bench", "agent", "message", t, role="user", tokens=len(t) // 4, tokenizer="x")
                for t in texts
            ]
            t0 = time.perf_counter()
            for item in items:
                store.add(item)
            bare = time.perf_counter() - t0
            t0 = time.perf_counter()
            for t in texts:
                item = ContextItem.new(
                    "bench", "agent2", "message", t, role="user", tokens=tok.count(t), tokenizer=tok.name
                )
                store.add(item)
            whole = time.perf_counter() - t0
        finally:
            store.close()
    return {
        "bench": "context_writes",
        "writes": n,
        "writes_per_s": round(n / bare),
        "records_per_s": round(n / whole),
        "tokenizer": tok.name,
    }


def _median_of(results: list[dict]) -> dict:
    out = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, int | float) and key not in (
            "messages",
            "vocabulary",
            "runs",
            "writes",
            "kept",
            "prompt_tokens",
        ):
            out[key] = round(statistics.median(r[key] for r in results), 3)
    out["repeats"] = len(results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    a = parser.parse_args()
    for semantic, vocabulary, uniform in ((False, 5000, False), (True, 5000, False), (False, 30, True)):
        got = [
            asyncio.run(
                bench_get_context(a.messages, a.runs, semantic=semantic, vocabulary=vocabulary, uniform=uniform)
            )
            for _ in range(a.repeat)
        ]
        print(json.dumps(_median_of(got)), flush=True)
    print(json.dumps(_median_of([bench_store_writes(a.writes) for _ in range(a.repeat)])), flush=True)


if __name__ == "__main__":
    main()
