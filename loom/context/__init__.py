"""Context engineering: what an agent remembers, and the prompt built from it for each turn.

Record messages, tool calls, tool results and observations in an :class:`AgentContext`; ask it
for a :class:`PromptBundle` with ``get_context(trigger)``. Retrieval (recency, type filter,
importance, BM25 keyword relevance, optional semantic similarity) → ranking → token window;
old tool steps are compacted into summaries, large outputs offloaded to files. Items persist in
SQLite (``.loom/context.db`` by default). See docs/cognitive.md, "Context engineering".

``import loom`` does not import this package; tiktoken and numpy load on first use.
"""

from loom.context.agent import AgentContext
from loom.context.bundle import PromptBundle
from loom.context.compaction import Summarizer, deterministic_summary
from loom.context.config import DEFAULT_IMPORTANCE, ContextConfig, RankWeights
from loom.context.embed import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from loom.context.errors import ContextStoreError
from loom.context.item import ContextItem, ItemKind, Role
from loom.context.schema import SCHEMA_VERSION
from loom.context.store import DEFAULT_PATH, ContextStore, MemoryContextStore, SQLiteContextStore
from loom.context.tokens import EstimateTokenizer, TiktokenTokenizer, Tokenizer, default_tokenizer

__all__ = [
    "DEFAULT_IMPORTANCE",
    "DEFAULT_PATH",
    "SCHEMA_VERSION",
    "AgentContext",
    "ContextConfig",
    "ContextItem",
    "ContextStore",
    "ContextStoreError",
    "Embedder",
    "EstimateTokenizer",
    "HashingEmbedder",
    "ItemKind",
    "MemoryContextStore",
    "PromptBundle",
    "RankWeights",
    "Role",
    "SQLiteContextStore",
    "SentenceTransformerEmbedder",
    "Summarizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "default_tokenizer",
    "deterministic_summary",
]
