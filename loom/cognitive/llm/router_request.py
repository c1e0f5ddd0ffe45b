"""What one call asks of the model router: privacy, latency budget, cost cap, quality floor.

Also the privacy boundary (which provider localities may see which requests) and the prompt-size
estimate used for cost when the caller gives none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loom.cognitive.llm.types import Locality, Message
from loom.errors import UsageError

__all__ = ["ROUTING_KEYS", "refusal", "Privacy", "RoutingRequest", "estimate_tokens", "in_boundary"]

ROUTING_KEYS = ("privacy", "latency_budget_ms", "cost_cap", "quality_floor")
"""The metadata keys (and ``llm.generate`` arguments) that make a :class:`RoutingRequest`."""


class Privacy(StrEnum):
    """How far a request's data may travel (see :func:`in_boundary`)."""

    PUBLIC = "public"
    SENSITIVE = "sensitive"
    PRIVATE = "private"
    LOCAL_ONLY = "local-only"


_BOUNDARY: dict[Privacy, frozenset[Locality]] = {
    Privacy.PUBLIC: frozenset(Locality),
    Privacy.SENSITIVE: frozenset(Locality),
    Privacy.PRIVATE: frozenset({Locality.LOCAL, Locality.PRIVATE}),
    Privacy.LOCAL_ONLY: frozenset({Locality.LOCAL}),
}


def refusal(model: Any, request: RoutingRequest) -> str | None:
    """Why ``model`` may not take ``request`` (``None``: it may). A router or a routed model decides
    itself; a single model is checked against the request's privacy boundary by its locality."""
    if getattr(model, "routes_requests", False):
        return None
    config = getattr(model, "config", None)
    locality = getattr(config, "resolved_locality", None)
    if locality is None and _BOUNDARY[request.privacy] == frozenset(Locality):
        return None  # a model of unknown locality may take what may go anywhere
    if locality is not None and in_boundary(request.privacy, locality):
        return None
    where = f"{config.name!r} ({locality})" if locality is not None else repr(model)
    return (
        f"privacy {request.privacy.value!r} does not allow the model {where}; nothing was sent "
        "(use a ModelRouter with a provider inside that boundary)"
    )


def in_boundary(privacy: Privacy, locality: Locality) -> bool:
    """Whether a provider at ``locality`` may see a request of ``privacy`` (failover never crosses this)."""
    return locality in _BOUNDARY[privacy]


def _number(key: str, value: object, *, low: float, low_ok: bool, high: float | None = None) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UsageError(f"routing {key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"routing {key} must be a finite number, got {value!r}")
    if value < low or (value == low and not low_ok) or (high is not None and value > high):
        bounds = f"within {low:g}..{high:g}" if high is not None else (f">= {low:g}" if low_ok else f"> {low:g}")
        raise UsageError(f"routing {key} must be {bounds}, got {value!r}")
    return float(value)


def _privacy(value: object) -> Privacy:
    if isinstance(value, Privacy):
        return value
    if isinstance(value, str):
        try:
            # Metadata is written by hand as often as by code: accept LOCAL_ONLY and local_only too.
            return Privacy(value.strip().lower().replace("_", "-"))
        except ValueError:
            pass
    allowed = ", ".join(p.value for p in Privacy)
    raise UsageError(f"routing privacy must be one of {allowed}; got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingRequest:
    """What one call asks of the router. ``None`` means "no constraint".

    Args:
        privacy: how far the data may travel (default ``sensitive``: anywhere, local preferred).
        latency_budget_ms: the answer is wanted within this many milliseconds.
        cost_cap: the most one call may cost (same currency as the providers' prices); a hard limit.
        quality_floor: 0..1, the least quality wanted (a preference: broken only when the rules say so).
        input_tokens: prompt size for cost estimates (``None``: estimated from the messages, ~4 chars/token).
        output_tokens: expected answer size for cost estimates.

    Raises:
        UsageError: a value is out of range (the message names it).
    """

    privacy: Privacy = Privacy.SENSITIVE
    latency_budget_ms: float | None = None
    cost_cap: float | None = None
    quality_floor: float | None = None
    input_tokens: int | None = None
    output_tokens: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "privacy", _privacy(self.privacy))
        if self.latency_budget_ms is not None:
            object.__setattr__(
                self, "latency_budget_ms", _number("latency_budget_ms", self.latency_budget_ms, low=0, low_ok=False)
            )
        if self.cost_cap is not None:
            object.__setattr__(self, "cost_cap", _number("cost_cap", self.cost_cap, low=0, low_ok=True))
        if self.quality_floor is not None:
            object.__setattr__(
                self, "quality_floor", _number("quality_floor", self.quality_floor, low=0, low_ok=True, high=1)
            )
        for key in ("input_tokens", "output_tokens"):
            v = getattr(self, key)
            if v is None and key == "input_tokens":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"routing {key} must be an int >= 0, got {v!r}")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object], **defaults: Any) -> RoutingRequest:
        """A request from event metadata keys ``privacy``, ``latency_budget_ms``, ``cost_cap``, ``quality_floor``.

        Keys that are absent (or empty) take ``defaults`` (e.g. an agent's own policy), then the
        class defaults. Values may be strings, as event metadata always is.

        Raises:
            UsageError: a present value is not valid; the message names the key.
        """
        fields = dict(defaults)
        for key in ROUTING_KEYS:
            value = metadata.get(key)
            if value is not None and value != "":
                fields[key] = value
        return cls(**fields)

    def narrowed_by(self, other: RoutingRequest | None) -> RoutingRequest:
        """``other`` on top of this one: its budget, cap, floor and sizes where it sets them, this
        one's elsewhere, and the stricter privacy of the two (a bound request is a floor that a
        per-call request can tighten, never loosen)."""
        if other is None:
            return self
        order = list(Privacy)
        privacy = max(self.privacy, other.privacy, key=order.index)

        def pick(name: str) -> Any:
            value = getattr(other, name)
            return getattr(self, name) if value is None else value

        return RoutingRequest(
            privacy=privacy,
            latency_budget_ms=pick("latency_budget_ms"),
            cost_cap=pick("cost_cap"),
            quality_floor=pick("quality_floor"),
            input_tokens=pick("input_tokens"),
            output_tokens=other.output_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "privacy": self.privacy.value,
            "latency_budget_ms": self.latency_budget_ms,
            "cost_cap": self.cost_cap,
            "quality_floor": self.quality_floor,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


def estimate_tokens(messages: Sequence[Message] | None, tools: Sequence[Mapping[str, Any]] | None = None) -> int:
    """Prompt tokens of ``messages`` (and ``tools``) by the one estimate (a cost estimate, not a count)."""
    from loom.cognitive.llm.stream import prompt_chars
    from loom.context.tokens import estimate_tokens as per_chars

    return per_chars(prompt_chars(messages, tools))
