"""Subjects and patterns: Loom topics are NATS subjects as they are; these are the few rules between them.

Overlapping NATS subscriptions of one connection each get a copy of a message, so a link subscribes
a minimal set of patterns; subjects NATS itself uses (JetStream, key-value, inboxes, capability
calls) are never bus events; every subscription gets the same bounded pending limits (what does
not fit is a slow-consumer drop, counted by the connection).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from loom.errors import UsageError
from loom.events.topics import TopicIndex, validate_pattern

__all__ = ["INTERNAL_PREFIXES", "SUB_LIMITS", "PatternSet", "check_patterns", "covered", "minimal_patterns"]


def minimal_patterns(patterns: Iterable[str]) -> list[str]:
    """``patterns`` without those another one covers: overlapping NATS subscriptions would deliver twice."""
    ps = list(dict.fromkeys(patterns))
    return [p for p in ps if not any(q != p and _covers(q, p) for q in ps)]


def covered(pattern: str, patterns: Iterable[str]) -> bool:
    """Whether every subject ``pattern`` matches is matched by one of ``patterns``."""
    return any(q == pattern or _covers(q, pattern) for q in patterns)


def _covers(q: str, p: str) -> bool:
    qt, pt = q.split("."), p.split(".")
    for i, tok in enumerate(qt):
        if tok == ">":
            return len(pt) > i
        if i >= len(pt) or (tok != "*" and tok != pt[i]) or (tok == "*" and pt[i] == ">"):
            return False
    return len(qt) == len(pt)


INTERNAL_PREFIXES = ("$JS.", "$KV.", "$SYS.", "$O.", "_INBOX.", "_loom.")
SUB_LIMITS = {"pending_msgs_limit": 262_144, "pending_bytes_limit": 256 * 1024 * 1024}


def check_patterns(patterns: Iterable[str], what: str) -> list[str]:
    """``patterns`` as a list, each a valid topic pattern.

    Raises:
        UsageError: one is not (the message names the option, ``what``).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    out = list(patterns)
    for p in out:
        try:
            validate_pattern(p)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{what}: {exc}") from None
    return out


class PatternSet:
    """Patterns with a cached "does this subject match any?" (asked once per message on hot paths)."""

    def __init__(self) -> None:
        self._index: TopicIndex[str] = TopicIndex()
        self._counts: dict[str, int] = {}
        self._cache: dict[str, bool] = {}

    @classmethod
    def of(cls, patterns: Iterable[str]) -> PatternSet:
        out = cls()
        out.add(patterns)
        return out

    def add(self, patterns: Iterable[str]) -> None:
        for p in patterns:
            if self._counts.get(p, 0) == 0:
                self._index.add(p, p)
            self._counts[p] = self._counts.get(p, 0) + 1
        self._cache.clear()

    def remove(self, patterns: Iterable[str]) -> None:
        for p in patterns:
            n = self._counts.get(p, 0) - 1
            if n <= 0:
                self._counts.pop(p, None)
                self._index.remove(p, p)
            else:
                self._counts[p] = n
        self._cache.clear()

    def replace(self, patterns: Iterable[str]) -> None:
        """Hold exactly ``patterns`` from now on."""
        self.remove([p for p, n in self._counts.items() for _ in range(n)])
        self.add(patterns)

    def matches(self, subject: str) -> bool:
        hit = self._cache.get(subject)
        if hit is None:
            if not self._counts:
                return False
            try:
                hit = bool(self._index.match(subject))
            except (TypeError, ValueError):
                hit = False
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[subject] = hit
        return hit

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._counts))
