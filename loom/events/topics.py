"""Topics, subscription patterns and the pattern index.

A topic is a dot-separated list of non-empty segments without whitespace or wildcards.
A pattern may also use ``*`` (exactly one segment) and, as its last segment, ``>`` (one or more
trailing segments): NATS subject semantics, so a NATS transport maps 1:1.

:class:`TopicIndex` is a segment trie: finding the subscribers of a topic walks at most
``depth × 3`` nodes, whatever the number of subscriptions on unrelated topics.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from loom.errors import InvalidTopic

__all__ = ["TopicIndex", "topic_matches", "validate_pattern", "validate_topic"]

MAX_TOPIC_LENGTH = 1024


def _check(value: object, *, pattern: bool) -> list[str]:
    if value.__class__ is not str:
        kind = "pattern" if pattern else "topic"
        raise TypeError(f"{kind} must be str, got {value.__class__.__name__}: {value!r}")
    topic: str = value  # type: ignore[assignment]
    if not topic:
        raise InvalidTopic(topic, "empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidTopic(topic[:40] + "…", f"longer than {MAX_TOPIC_LENGTH} characters")
    if "\x00" in topic or topic.split() != [topic]:  # str.split() splits on any Unicode space
        raise InvalidTopic(topic, "contains whitespace or a NUL character")
    segments = topic.split(".")
    for i, seg in enumerate(segments):
        if not seg:
            raise InvalidTopic(topic, f"segment {i + 1} is empty (leading, trailing or double dot)")
        if seg == "*" or seg == ">":
            if not pattern:
                raise InvalidTopic(topic, f"wildcard {seg!r} is not allowed in a published topic")
            if seg == ">" and i != len(segments) - 1:
                raise InvalidTopic(topic, "'>' is only allowed as the last segment")
        elif "*" in seg or ">" in seg:
            raise InvalidTopic(topic, f"segment {seg!r} mixes a wildcard with other characters")
    return segments


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid concrete topic.

    Raises:
        TypeError: not a str.
        InvalidTopic: (a ``ValueError``) empty, empty segment, whitespace, wildcard, too long.
    """
    _check(topic, pattern=False)
    return topic  # type: ignore[return-value]


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid subscription pattern (``*`` and trailing ``>`` allowed).

    Raises:
        TypeError: not a str.
        InvalidTopic: (a ``ValueError``) malformed pattern.
    """
    _check(pattern, pattern=True)
    return pattern  # type: ignore[return-value]


def topic_matches(pattern: str, topic: str) -> bool:
    """Reference matcher: does ``pattern`` match the concrete ``topic``? (No index; O(segments).)"""
    p = pattern.split(".")
    t = topic.split(".")
    for i, seg in enumerate(p):
        if seg == ">":
            return len(t) > i
        if i >= len(t):
            return False
        if seg != "*" and seg != t[i]:
            return False
    return len(p) == len(t)


V = TypeVar("V", bound=Hashable)


class _Node(Generic[V]):
    __slots__ = ("children", "tail", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.values: dict[V, None] = {}  # values whose pattern ends exactly here (ordered set)
        self.tail: dict[V, None] = {}  # values whose pattern ends here with '>'

    def empty(self) -> bool:
        return not (self.children or self.values or self.tail)


class TopicIndex(Generic[V]):
    """A segment trie from patterns to values (e.g. subscriptions).

    ``match(topic)`` returns every value whose pattern matches, each once, in insertion order
    per node. Adding the same (pattern, value) twice is idempotent.
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, pattern: str, value: V) -> bool:
        """Index ``value`` under ``pattern`` (validated). Returns whether it is the pattern's first value."""
        segments = _check(pattern, pattern=True)
        node = self._root
        tail = segments[-1] == ">"
        for seg in segments[:-1] if tail else segments:
            nxt = node.children.get(seg)
            if nxt is None:
                nxt = node.children[seg] = _Node()
            node = nxt
        bucket = node.tail if tail else node.values
        first = not bucket
        if value not in bucket:
            bucket[value] = None
            self._size += 1
        return first

    def holds(self, pattern: str) -> bool:
        """Whether any value is indexed under exactly ``pattern``."""
        segments = pattern.split(".")
        tail = segments[-1] == ">"
        node = self._root
        for seg in segments[:-1] if tail else segments:
            nxt = node.children.get(seg)
            if nxt is None:
                return False
            node = nxt
        return bool(node.tail if tail else node.values)

    def remove(self, pattern: str, value: V) -> bool:
        """Remove ``value`` from ``pattern``; prune empty nodes. Returns whether it was there."""
        segments = pattern.split(".")
        tail = segments[-1] == ">"
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for seg in segments[:-1] if tail else segments:
            nxt = node.children.get(seg)
            if nxt is None:
                return False
            path.append((node, seg))
            node = nxt
        bucket = node.tail if tail else node.values
        if value not in bucket:
            return False
        del bucket[value]
        self._size -= 1
        while path and node.empty():
            parent, seg = path.pop()
            del parent.children[seg]
            node = parent
        return True

    def match(self, topic: str) -> list[V]:
        """Values whose pattern matches the concrete ``topic``, de-duplicated."""
        segments = topic.split(".")
        found: dict[V, None] = {}
        last = len(segments)
        # Iterative walk over (node, depth); each level branches to the literal and '*' child.
        stack = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            if node.tail and depth < last:
                found.update(node.tail)
            if depth == last:
                if node.values:
                    found.update(node.values)
                continue
            children = node.children
            if not children:
                continue
            star = children.get("*")
            if star is not None:
                stack.append((star, depth + 1))
            lit = children.get(segments[depth])
            if lit is not None and lit is not star:
                stack.append((lit, depth + 1))
        return list(found)

    def patterns(self) -> Iterator[tuple[str, V]]:
        """Every (pattern, value) pair, depth-first."""
        stack: list[tuple[_Node[V], list[str]]] = [(self._root, [])]
        while stack:
            node, prefix = stack.pop()
            for v in node.values:
                yield ".".join(prefix), v
            for v in node.tail:
                yield ".".join([*prefix, ">"]), v
            for seg, child in node.children.items():
                stack.append((child, [*prefix, seg]))
