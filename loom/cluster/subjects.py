"""Subjects and patterns: Loom topics are NATS subjects as they are; these are the few rules between them.

Overlapping NATS subscriptions of one connection each get a copy of a message, so a link subscribes
a minimal set of patterns; subjects NATS itself uses (JetStream, key-value, inboxes, capability
calls) are never bus events; every subscription gets the same bounded pending limits (what does
not fit is a slow-consumer drop, counted by the connection).
"""

from __future__ import annotations

from collections.abc import Iterable

from loom.errors import UsageError
from loom.events.topics import validate_pattern

__all__ = ["INTERNAL_PREFIXES", "SUB_LIMITS", "check_patterns", "minimal_patterns"]


def minimal_patterns(patterns: Iterable[str]) -> list[str]:
    """``patterns`` without those another one covers: overlapping NATS subscriptions would deliver twice."""
    ps = list(dict.fromkeys(patterns))
    return [p for p in ps if not any(q != p and _covers(q, p) for q in ps)]


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
