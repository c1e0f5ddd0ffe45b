"""Compaction of old tool steps into summaries, and offloading of large tool outputs to files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from loom.context import AgentContext, ContextConfig, ContextStoreError, deterministic_summary
from loom.errors import UsageError


def _is_file(path: str | Path) -> bool:
    return Path(path).is_file()


def _gone(path: str | Path) -> bool:
    return not Path(path).exists()


async def _steps(ctx: AgentContext, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        call = await ctx.record_tool_call("fs.read", {"path": f"file{i}.txt"})
        res = await ctx.record_tool_result("fs.read", i % 4 != 3, f"contents of file{i}", call.call_id)
        ids += [call.id, res.id]
    return ids


async def test_old_tool_steps_are_compacted_into_a_stored_summary_and_leave_retrieval():
    async with AgentContext("s", "a", config=ContextConfig(keep_recent_steps=3, compact_min_steps=4)) as ctx:
        await ctx.record_message("user", "read all the files")
        old = await _steps(ctx, 8)
        bundle = await ctx.get_context("files")

        (summary,) = bundle.compacted
        assert summary["new"] and summary["included"] and summary["covers"] == 10 and summary["steps"] == 5
        compacted = {d["id"]: d["reason"] for d in bundle.dropped}
        assert all(compacted[i] == f"compacted into {summary['id']}" for i in old[:10])
        assert "Earlier tool steps, compacted (5; fs.read ×5: 4 ok, 1 failed)" in bundle.memory
        assert '- fs.read({"path": "file3.txt"}) → failed: contents of file3' in bundle.memory
        assert '[tool_call fs.read] fs.read({"path": "file7.txt"})' in bundle.memory  # recent steps stay whole
        assert '[tool_call fs.read] fs.read({"path": "file4.txt"})' not in bundle.memory

        history = {i.id: i for i in await ctx.history(100)}
        assert all(history[i].compacted_into == summary["id"] for i in old[:10])
        assert all(history[i].compacted_into is None for i in old[10:])
        assert history[summary["id"]].kind == "summary"

        again = await ctx.get_context("files")  # nothing new to compact; the summary is retrieved, not remade
        assert [c["id"] for c in again.compacted] == [summary["id"]] and not again.compacted[0]["new"]
        assert not any(d["reason"].startswith("compacted") for d in again.dropped)
        assert again.memory == bundle.memory


async def test_compaction_waits_for_enough_old_steps():
    async with AgentContext("s", "a", config=ContextConfig(keep_recent_steps=5, compact_min_steps=5)) as ctx:
        await _steps(ctx, 9)
        assert (await ctx.get_context("x")).compacted == []
        await _steps(ctx, 1, start=9)
        assert len((await ctx.get_context("x")).compacted) == 1


async def test_a_pluggable_summariser_writes_the_summary():
    seen = []

    async def summarise(items):
        seen.append([i.kind for i in items])
        return f"{len(items)} items about reading files"

    config = ContextConfig(keep_recent_steps=1, compact_min_steps=2)
    async with AgentContext("s", "a", config=config, summarizer=summarise) as ctx:
        await _steps(ctx, 3)
        bundle = await ctx.get_context("x")
    assert seen == [["tool_call", "tool_result", "tool_call", "tool_result"]]
    assert "[summary] 4 items about reading files" in bundle.memory
    assert bundle.notes == []


async def test_a_failing_summariser_falls_back_to_the_deterministic_summary_and_says_so():
    async def broken(items):
        raise RuntimeError("model down")

    config = ContextConfig(keep_recent_steps=1, compact_min_steps=2)
    async with AgentContext("s", "a", config=config, summarizer=broken) as ctx:
        await _steps(ctx, 3)
        bundle = await ctx.get_context("x")
    assert "Earlier tool steps, compacted (2;" in bundle.memory
    assert any("summariser failed (RuntimeError: model down)" in n for n in bundle.notes)


async def test_the_deterministic_summary_is_bounded_and_repeatable():
    async with AgentContext("s", "a") as ctx:
        await _steps(ctx, 30)
        items = await ctx.history(100)
    text = await deterministic_summary(items)
    assert text == await deterministic_summary(items)
    assert text.count("\n- fs.read") == 20 and text.endswith("- … and 10 more steps")


async def test_a_large_tool_result_is_offloaded_to_a_file_under_the_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = "".join(f"line {i}: " + "x" * 40 + "\n" for i in range(200))
    async with AgentContext.with_defaults("sess/1", "a") as ctx:
        call = await ctx.record_tool_call("shell.exec", {"cmd": "big"})
        item = await ctx.record_tool_result("shell.exec", True, output, call.call_id)
        path = Path(item.offload_ref)
        assert path.parent.parent == tmp_path / ".loom" / "offload"
        assert path.parent.name.startswith("sess_1-")  # a session name made safe for the file system
        assert await ctx.read_offloaded(path) == output
        shown = path.relative_to(tmp_path).as_posix()
        assert item.text.splitlines()[:10] == output.splitlines()[:10]
        assert item.text.splitlines()[-1] == (
            f"[full output: {len(output)} bytes, 200 lines in {shown}; "
            "showing the first 10 lines; read it with fs.read]"
        )
        assert item.data == {"offloaded": shown, "bytes": len(output), "lines": 200}
        assert item.tokens < 300
        assert await ctx.read_offloaded(item.offload_ref) == output
        assert await ctx.read_offloaded(shown) == output  # the path the prompt shows works too
        assert shown in (await ctx.get_context("big")).memory
        with pytest.raises(UsageError, match="not an offloaded output"):
            await ctx.read_offloaded(str(tmp_path / ".loom" / "context.db"))
        with pytest.raises(UsageError, match="not an offloaded output"):
            await ctx.read_offloaded("../../etc/passwd")
        await asyncio.to_thread(path.unlink)
        with pytest.raises(ContextStoreError, match="gone"):
            await ctx.read_offloaded(item.offload_ref)


async def test_offloading_thresholds_are_bytes_or_lines():
    async with AgentContext("s", "a") as ctx:
        small = await ctx.record_tool_result("t", True, "a\n" * 50)
        many_lines = await ctx.record_tool_result("t", True, "a\n" * 51)
        many_bytes = await ctx.record_tool_result("t", True, {"blob": "é" * 1100})  # 2200+ bytes, 1 line
    assert small.offload_ref is None and small.text == "a\n" * 50
    assert many_lines.offload_ref is not None and many_bytes.offload_ref is not None


async def test_the_memory_store_offloads_to_a_temporary_directory_removed_on_close():
    ctx = AgentContext("s", "a")
    item = await ctx.record_tool_result("t", True, "y" * 5000)
    path = Path(item.offload_ref)
    assert _is_file(path)
    await ctx.aclose()
    assert _gone(path) and _gone(path.parent.parent.parent)


async def test_an_offload_directory_can_be_given(tmp_path):
    async with AgentContext("s", "a", offload_dir=tmp_path) as ctx:
        item = await ctx.record_tool_result("t", True, "z" * 5000)
    assert Path(item.offload_ref).parent == tmp_path / "offload" / "s"
    assert _is_file(item.offload_ref)  # given, so not ours to remove


async def test_clear_removes_offloaded_files_no_one_else_references(tmp_path):
    from loom.context import SQLiteContextStore

    store = SQLiteContextStore(tmp_path / "c.db")
    try:
        async with AgentContext("s", "a", store) as a, AgentContext("s", "b", store) as b:
            shared = await a.record_tool_result("t", True, "same output\n" * 100)
            await b.record_tool_result("t", True, "same output\n" * 100)
            own = await a.record_tool_result("t", True, "only a's\n" * 100)
            assert shared.offload_ref != own.offload_ref
            await a.clear()
            assert _is_file(shared.offload_ref)  # b still refers to it
            assert _gone(own.offload_ref)
    finally:
        store.close()


async def test_a_call_id_reused_in_a_later_turn_is_a_new_step():
    from loom.context import AgentContext

    ctx = AgentContext("s", "a")
    for turn in range(2):  # a server that numbers its call ids per answer: "call_0" both times
        await ctx.record_tool_call("math.add", {"a": turn, "b": 1}, call_id="call_0")
        await ctx.record_tool_result("math.add", True, turn + 1, "call_0")
    from loom.context.compaction import step_keys

    items = sorted(await ctx.history(10), key=lambda i: i.seq)
    keys = step_keys(items)
    first, second = {keys[i.id] for i in items[:2]}, {keys[i.id] for i in items[2:]}
    assert len(first) == 1 and len(second) == 1 and first != second  # two steps, each call with its result
    await ctx.aclose()
