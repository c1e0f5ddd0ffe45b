"""AgentContext: what one agent in one session has seen and done, and the prompt built from it.

Record as things happen (``record_message``, ``record_tool_call``, ``record_tool_result``,
``record_observation``); ask for a prompt with ``get_context(trigger)``. Items persist in the
store, so an agent re-created after a kernel restart (same session, same agent id, same file)
continues the conversation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loom.context.bundle import PromptBundle
from loom.context.compaction import Summarizer, compact
from loom.context.config import ContextConfig
from loom.context.embed import Embedder
from loom.context.item import ROLES, ContextItem, check_importance, check_text, new_item_id
from loom.context.offload import Offloader
from loom.context.pipeline import TokenCounter, build_bundle
from loom.context.semantic import VectorIndex
from loom.context.store import DEFAULT_PATH, ContextStore, MemoryContextStore, SQLiteContextStore
from loom.context.tokens import Tokenizer, default_tokenizer
from loom.errors import ClosedError, UsageError

__all__ = ["AgentContext"]


def _name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{what} must be a non-empty str, got {value!r}")
    return value


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)  # pydantic models
    return dump(mode="json") if callable(dump) else str(value)


def _reduce(value: Any, limit: int) -> Any:
    """Tool arguments as a prompt shows them: long strings cut (upstream's step reduction)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}…(+{len(value) - limit} chars)"
    if isinstance(value, Mapping):
        return {k: _reduce(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reduce(v, limit) for v in value]
    return value


class AgentContext:
    """An agent's context engineering: recording, retrieval, ranking, window, compaction, offloading.

    Args:
        session: the conversation (several agents may share one).
        agent_id: whose context this is.
        store: where items live; ``None``: a private in-memory store, closed by :meth:`aclose`.
        tokenizer: counts tokens (default: cl100k_base via tiktoken, or the chars/4 estimate).
        embedder: enables semantic retrieval (e.g. :class:`HashingEmbedder`).
        config: pipeline settings (:class:`ContextConfig`).
        summarizer: ``async (items) -> str`` for compaction (default: deterministic).
        offload_dir: where large tool outputs go (default: the store's directory; for a store
            without one, a temporary directory removed by :meth:`aclose`).

    Raises:
        UsageError: a bad argument.
    """

    def __init__(
        self,
        session: str,
        agent_id: str,
        store: ContextStore | None = None,
        *,
        tokenizer: Tokenizer | None = None,
        embedder: Embedder | None = None,
        config: ContextConfig | None = None,
        summarizer: Summarizer | None = None,
        offload_dir: str | Path | None = None,
    ) -> None:
        self.session = _name("session", session)
        self.agent_id = _name("agent_id", agent_id)
        if store is not None and not isinstance(store, ContextStore):
            raise UsageError(f"store must be a ContextStore (e.g. SQLiteContextStore), got {store!r}")
        if config is not None and not isinstance(config, ContextConfig):
            raise UsageError(f"config must be a ContextConfig, got {config!r}")
        if embedder is not None and not isinstance(embedder, Embedder):
            raise UsageError(f"embedder must have name, dim and embed(texts), got {embedder!r}")
        if summarizer is not None and not callable(summarizer):
            raise UsageError(f"summarizer must be an async callable (items) -> str, got {summarizer!r}")
        self.config = config or ContextConfig()
        self.tokenizer = tokenizer or default_tokenizer()
        if not isinstance(self.tokenizer, Tokenizer):
            raise UsageError(f"tokenizer must have name and count(text), got {self.tokenizer!r}")
        self._owns_store = store is None
        self.store: ContextStore = store if store is not None else MemoryContextStore()
        self.embedder = embedder
        self._summarizer = summarizer
        c = self.config
        self._offloader = Offloader(
            offload_dir if offload_dir is not None else self.store.directory,
            max_bytes=c.offload_bytes,
            max_lines=c.offload_lines,
            preview_lines=c.preview_lines,
            preview_chars=c.preview_chars,
        )
        self._counter = TokenCounter(self.tokenizer.count)
        self._vectors = None if embedder is None else VectorIndex(self.store, self.session, self.agent_id, embedder)
        self._compacting = asyncio.Lock()
        self._embed_failures: list[str] = []
        self._closed = False

    @classmethod
    def with_defaults(cls, session: str, agent_id: str, *, path: str | Path | None = None, **kw: Any) -> AgentContext:
        """A context on the SQLite store at ``path`` (default ``.loom/context.db`` under the working
        directory), which :meth:`aclose` closes. Other keywords go to the constructor.

        Raises:
            ContextStoreError: the file is corrupt, not a database, or from a newer Loom (untouched).
        """
        store = SQLiteContextStore(path if path is not None else Path.cwd() / DEFAULT_PATH)
        try:
            ctx = cls(session, agent_id, store, **kw)
        except BaseException:
            store.close()
            raise
        ctx._owns_store = True
        return ctx

    # -- recording ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"AgentContext({self.session!r}, {self.agent_id!r}) is closed")

    async def _add(self, kind: str, text: str, importance: float | None, default: str, **fields: Any) -> ContextItem:
        self._check_open()
        imp = self.config.default_importance(default) if importance is None else check_importance(importance)
        item = ContextItem.new(
            self.session,
            self.agent_id,
            kind,  # type: ignore[arg-type]
            text,
            importance=imp,
            tokens=self.tokenizer.count(text),
            tokenizer=self.tokenizer.name,
            **fields,
        )
        blob = None
        if self._vectors is not None:
            try:
                blob = await self._vectors.embed_blob(text)
            except Exception as exc:  # noqa: BLE001 - the item is kept without a vector; reported in the next bundle
                self._embed_failures.append(f"{item.id}: {type(exc).__name__}: {exc}")
        self._check_open()  # closed while the embedder ran
        name = self.embedder.name if blob is not None and self.embedder is not None else None
        return self.store.add(item, embedder=name, embedding=blob)

    async def record_message(self, role: str, text: str, *, importance: float | None = None) -> ContextItem:
        """Record a chat message (``role``: user, assistant or system).

        Raises:
            UsageError: unknown role, non-str text, importance outside 0..1.
        """
        if role not in ROLES:
            raise UsageError(f"role must be one of {sorted(ROLES)}, got {role!r}")
        check_text("text", text)
        return await self._add("message", text, importance, f"message:{role}", role=role)

    async def record_tool_call(self, name: str, args: Any = None, *, call_id: str | None = None) -> ContextItem:
        """Record a tool call; its ``text`` shows the arguments with long strings cut.

        ``args`` is usually a mapping; any JSON value is recorded as given, because a model's
        malformed arguments (a list, a bare string) are part of what happened. ``call_id``
        (default: a new id, on the returned item) links the result to it.

        Raises:
            UsageError: an empty name or call_id, arguments that cannot be JSON.
        """
        _name("tool name", name)
        if call_id is not None:
            _name("call_id", call_id)
        args = {} if args is None else dict(args) if isinstance(args, Mapping) else args
        try:
            data = json.loads(json.dumps(args, ensure_ascii=False, default=_jsonable))
        except (TypeError, ValueError) as exc:  # non-str keys that JSON cannot take, a reference cycle
            raise UsageError(f"tool arguments must be JSON-able: {exc}") from exc
        shown = json.dumps(_reduce(data, self.config.arg_chars), ensure_ascii=False)
        return await self._add(
            "tool_call", f"{name}({shown})", None, "tool_call", name=name, data=data, call_id=call_id or new_item_id()
        )

    async def record_tool_result(self, name: str, ok: bool, result: Any, call_id: str | None = None) -> ContextItem:
        """Record a tool's outcome. A result over ``offload_bytes`` or ``offload_lines`` is written
        to a file; the item's ``text`` is then a preview plus a reference line naming the file
        (what a prompt should show), and ``data`` says where the full output is.
        """
        _name("tool name", name)
        if not isinstance(ok, bool):
            raise UsageError(f"ok must be a bool, got {ok!r}")
        if call_id is not None:
            _name("call_id", call_id)
        rendered = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=_jsonable)
        fields: dict[str, Any] = {"name": name, "ok": ok, "call_id": call_id}
        if self._offloader.should_offload(rendered):
            off = await asyncio.to_thread(self._offloader.offload, self.session, rendered)
            text = off.text
            fields["offload_ref"] = str(off.path)
            fields["data"] = {"offloaded": Offloader.display(off.path), "bytes": off.bytes, "lines": off.lines}
        else:
            text = rendered
            fields["data"] = result if isinstance(result, str) else json.loads(rendered)
        return await self._add("tool_result", text, None, f"tool_result:{'ok' if ok else 'failed'}", **fields)

    async def record_observation(self, source: str, text: str, *, importance: float | None = None) -> ContextItem:
        """Record something the agent perceived (an event, a sensor reading) from ``source``."""
        _name("source", source)
        check_text("text", text)
        return await self._add("observation", text, importance, "observation", name=source)

    # -- reading -----------------------------------------------------------------------------

    async def get_context(
        self,
        trigger: str = "",
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        system: str | None = None,
        instructions: str | None = None,
        max_tokens: int | None = None,
    ) -> PromptBundle:
        """Build the prompt for ``trigger`` (the relevance query; record it with
        :meth:`record_message` to have it among the messages too).

        Compacts due tool steps first, then retrieves, ranks and fits the window (see
        :mod:`loom.context.pipeline`). ``tools`` are OpenAI tool schemas, kept whole.

        Raises:
            UsageError: a bad argument (non-str trigger, max_tokens not above the reserve).
        """
        self._check_open()
        check_text("trigger", trigger)
        for what, value in (("system", system), ("instructions", instructions)):
            if value is not None:
                check_text(what, value)
        tool_list = [] if tools is None else list(tools)
        if not all(isinstance(t, Mapping) for t in tool_list):
            raise UsageError("tools must be a list of tool schemas (dicts)")
        window = self.config.max_tokens if max_tokens is None else max_tokens
        if isinstance(window, bool) or not isinstance(window, int) or window <= self.config.reserve:
            raise UsageError(f"max_tokens must be an int above the reserve ({self.config.reserve}), got {window!r}")
        async with self._compacting:
            new, notes = await compact(
                self.store,
                self.session,
                self.agent_id,
                self.config,
                self.tokenizer.count,
                self.tokenizer.name,
                self._summarizer,
            )
        self._check_open()
        if self._vectors is not None:
            self._vectors.discard(i.seq for _, covered in new for i in covered)
        if self._embed_failures:
            shown = "; ".join(self._embed_failures[:3])
            notes.append(f"embedder failed on {len(self._embed_failures)} item(s), kept without vectors: {shown}")
            self._embed_failures.clear()
        return await build_bundle(
            store=self.store,
            session=self.session,
            agent_id=self.agent_id,
            config=self.config,
            counter=self._counter,
            tokenizer_name=self.tokenizer.name,
            vectors=self._vectors,
            trigger=trigger,
            system=system or "",
            instructions=instructions or "",
            tools=[dict(t) for t in tool_list],
            max_tokens=window,
            new_summaries=new,
            notes=notes,
        )

    async def history(self, limit: int = 50) -> list[ContextItem]:
        """The newest ``limit`` items, compacted ones included, oldest first."""
        self._check_open()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise UsageError(f"limit must be an int >= 0, got {limit!r}")
        return self.store.history(self.session, self.agent_id, limit)

    async def read_offloaded(self, ref: str | Path) -> str:
        """The full output an offload reference (the item's ``offload_ref``, or the path its text
        shows) points to.

        Raises:
            UsageError: ``ref`` is not an offloaded output of this context.
            ContextStoreError: the file was deleted.
        """
        self._check_open()
        return await asyncio.to_thread(self._offloader.read, ref)

    async def clear(self) -> int:
        """Forget this agent's items in this session (and offloaded files no other item uses).
        Returns how many items were deleted."""
        self._check_open()
        n = self.store.count(self.session, self.agent_id)
        orphans = self.store.clear(self.session, self.agent_id)
        await asyncio.to_thread(self._offloader.remove, orphans)
        if self._vectors is not None:
            self._vectors.reset()
        return n

    async def aclose(self) -> None:
        """Close the store if this context opened it, and remove a temporary offload directory
        (idempotent). Items in a file store stay for the next run."""
        if self._closed:
            return
        self._closed = True
        if self._owns_store:
            self.store.close()
        self._offloader.cleanup()

    async def __aenter__(self) -> AgentContext:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AgentContext({self.session!r}, {self.agent_id!r}, store={self.store!r})"
