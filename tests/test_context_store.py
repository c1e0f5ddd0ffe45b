"""Context stores: the SQLite file (default place, WAL, schema version), restarts, sharing, bad files."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from loom.context import (
    SCHEMA_VERSION,
    AgentContext,
    ContextItem,
    ContextStoreError,
    MemoryContextStore,
    SQLiteContextStore,
)
from loom.errors import ClosedError, LoomError

ROOT = Path(__file__).resolve().parents[1]


def _pragma(path: Path, name: str) -> object:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


async def test_with_defaults_keeps_items_in_dot_loom_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    async with AgentContext.with_defaults("session-1", "agent-1") as ctx:
        await ctx.record_message("user", "remember me")
    db = tmp_path / ".loom" / "context.db"
    assert db.is_file()
    assert _pragma(db, "journal_mode") == "wal"
    assert _pragma(db, "user_version") == SCHEMA_VERSION


async def test_a_new_process_continues_the_conversation_another_process_wrote(tmp_path):
    db = tmp_path / "ctx.db"
    writer = textwrap.dedent(
        f"""
        import asyncio
        from loom.context import AgentContext

        async def main():
            async with AgentContext.with_defaults("nb", "assistant", path={str(db)!r}) as ctx:
                await ctx.record_message("user", "My name is Ada.")
                await ctx.record_message("assistant", "Nice to meet you, Ada.")

        asyncio.run(main())
        """
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", writer, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()

    async with AgentContext.with_defaults("nb", "assistant", path=db) as ctx:  # "after the kernel restart"
        await ctx.record_message("user", "What is my name?")
        bundle = await ctx.get_context("What is my name?")
    assert bundle.messages == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]


async def test_two_contexts_on_one_file_see_only_their_own_items(tmp_path):
    db = tmp_path / "shared.db"
    async with (
        AgentContext.with_defaults("s1", "planner", path=db) as planner,
        AgentContext.with_defaults("s1", "coder", path=db) as coder,
        AgentContext.with_defaults("s2", "planner", path=db) as other_session,
    ):
        await planner.record_message("user", "plan the trip")
        await coder.record_message("user", "write the code")
        await other_session.record_message("user", "another trip plan")
        p = await planner.get_context("trip plan")
        c = await coder.get_context("trip plan")
        o = await other_session.get_context("trip plan")
    assert [m["content"] for m in p.messages] == ["plan the trip"]
    assert [m["content"] for m in c.messages] == ["write the code"]
    assert [m["content"] for m in o.messages] == ["another trip plan"]
    assert p.retrieved["matched"] == 1  # BM25 is scoped to the agent too


def test_the_memory_store_is_the_same_code_on_memory_and_owns_no_directory():
    store = MemoryContextStore()
    try:
        assert isinstance(store, SQLiteContextStore) and store.path is None and store.directory is None
        item = store.add(ContextItem.new("s", "a", "message", "hello world", role="user", tokens=2, tokenizer="t"))
        assert store.get(item.id) == item
        assert [seq for seq, _ in store.keyword("s", "a", store.informative_terms("World!"), 5)] == [item.seq]
        assert store.count("s", "a") == 1 and store.count("s", "other") == 0
    finally:
        store.close()
    store.close()  # idempotent
    with pytest.raises(ClosedError):
        store.count("s", "a")


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "context.db"
    path.write_text("these are my notes, not a database\n" * 100)
    before = _bytes(path)
    with pytest.raises(ContextStoreError, match="not a SQLite database") as err:
        SQLiteContextStore(path)
    assert str(path) in str(err.value) and "not changed" in str(err.value)
    assert isinstance(err.value, LoomError)
    assert _bytes(path) == before


async def test_a_corrupt_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "context.db"
    async with AgentContext.with_defaults("s", "a", path=path) as ctx:
        for i in range(300):
            await ctx.record_message("user", f"message {i} " + "filler " * 30)
    raw = bytearray(_bytes(path))
    assert len(raw) > 8 * 4096
    raw[4096 + 100 : 4096 * 6] = b"\xa5" * (4096 * 6 - 4096 - 100)  # scribble over pages 2..6
    path.write_bytes(bytes(raw))
    before = _bytes(path)
    with pytest.raises(ContextStoreError, match="corrupt") as err:
        AgentContext.with_defaults("s", "a", path=path)
    assert "move it away" in str(err.value)
    assert _bytes(path) == before


def test_a_database_from_a_newer_loom_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "context.db"
    SQLiteContextStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = _bytes(path)
    with pytest.raises(ContextStoreError, match=f"newer Loom \\(schema version {SCHEMA_VERSION + 1}") as err:
        SQLiteContextStore(path)
    assert "upgrade loom-notebook" in str(err.value)
    assert _bytes(path) == before


def test_another_applications_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO users (name) VALUES ('ada')")
    db.commit()
    db.close()
    before = _bytes(path)
    with pytest.raises(ContextStoreError, match="another application"):
        SQLiteContextStore(path)
    assert _bytes(path) == before


def test_an_empty_file_becomes_a_store(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    store = SQLiteContextStore(path)
    store.close()
    assert _pragma(path, "user_version") == SCHEMA_VERSION


def test_the_store_creates_missing_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "context.db"
    store = SQLiteContextStore(path)
    try:
        assert store.directory == path.parent and path.exists()
    finally:
        store.close()


async def test_items_counted_by_another_tokenizer_are_recounted_with_the_one_in_use(tmp_path):
    from loom.context import EstimateTokenizer, TiktokenTokenizer

    path = tmp_path / "c.db"
    text = "Tokenizers disagree about words like antidisestablishmentarianism."
    async with AgentContext.with_defaults("s", "a", path=path, tokenizer=EstimateTokenizer()) as ctx:
        item = await ctx.record_message("user", text)
    tik = TiktokenTokenizer()
    assert item.tokens == EstimateTokenizer().count(text) != tik.count(text)
    async with AgentContext.with_defaults("s", "a", path=path, tokenizer=tik) as ctx:
        bundle = await ctx.get_context("x")
    assert bundle.tokenizer == tik.name
    assert bundle.tokens["messages"] == tik.count(text) + 4


def test_compacting_items_another_context_already_compacted_changes_nothing(tmp_path):
    store = SQLiteContextStore(tmp_path / "c.db")
    try:
        call = store.add(ContextItem.new("s", "a", "tool_call", "t({})", name="t", call_id="c", tokenizer="x"))
        first = ContextItem.new("s", "a", "summary", "one", tokenizer="x")
        second = ContextItem.new("s", "a", "summary", "two", tokenizer="x")
        assert store.compact(first, [call.id]) is not None
        assert store.compact(second, [call.id]) is None
        assert store.get(second.id) is None and store.get(call.id).compacted_into == first.id
    finally:
        store.close()
