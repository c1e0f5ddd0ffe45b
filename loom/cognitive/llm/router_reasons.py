"""The sentences a routing decision gives as its reason, one function per rule.

Kept apart from the rules so that the rules read as conditions; each sentence names the numbers
the rule compared, and whether a latency was configured or observed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loom.cognitive.llm.router_request import Privacy, RoutingRequest
    from loom.cognitive.llm.router_rules import ProviderView

__all__ = [
    "cloud_choice_reason",
    "defer_reason",
    "drop_cost_reason",
    "drop_privacy_reason",
    "hybrid_reason",
    "local_fallback_reason",
    "local_reason",
    "tight_budget_reason",
]

_ALLOWED = {"public": "any", "sensitive": "any", "private": "local or private", "local-only": "local"}


def _lat(p: ProviderView) -> str:
    return f"~{p.est_latency_ms:.0f} ms {p.latency_source}"


def _who(p: ProviderView) -> str:
    return f"{p.locality.value} provider {p.name!r}"


def _floor(p: ProviderView, req: RoutingRequest) -> str:
    if req.quality_floor is None:
        return f"quality {p.quality:.2f}, no floor"
    op = ">=" if p.quality >= req.quality_floor else "<"
    return f"quality {p.quality:.2f} {op} floor {req.quality_floor:.2f}"


def _budget(p: ProviderView, req: RoutingRequest) -> str:
    if req.latency_budget_ms is None:
        return f"{_lat(p)}, no budget"
    op = "<=" if p.est_latency_ms <= req.latency_budget_ms else ">"
    return f"{_lat(p)} {op} budget {req.latency_budget_ms:.0f} ms"


def drop_privacy_reason(privacy: Privacy, views: Sequence[ProviderView]) -> str:
    if not views:
        return "no provider is configured"
    have = ", ".join(f"{p.name!r} ({p.locality.value})" for p in views)
    allowed = _ALLOWED[privacy.value]
    return f"privacy {privacy.value!r} allows only {allowed} providers and none is configured (have: {have})"


def drop_cost_reason(req: RoutingRequest, inside: Sequence[ProviderView]) -> str:
    cheapest = min(inside, key=lambda p: p.est_cost)
    return (
        f"every provider within privacy {req.privacy.value!r} exceeds the cost cap {req.cost_cap:g}"
        f" (cheapest: {cheapest.name!r} at ~{cheapest.est_cost:.4g})"
    )


def defer_reason(req: RoutingRequest, first: ProviderView) -> str:
    return (
        f"every provider within privacy {req.privacy.value!r} and the cost cap is unhealthy;"
        f" {first.name!r} is back in {first.back_in_s:.1f} s"
    )


def local_reason(req: RoutingRequest, p: ProviderView) -> str:
    return f"{_who(p)} meets the quality floor and the latency budget ({_floor(p, req)}; {_budget(p, req)})"


def hybrid_reason(req: RoutingRequest, drafter: ProviderView, refiner: ProviderView) -> str:
    return (
        "no single provider meets both the quality floor and the latency budget:"
        f" {_who(drafter)} drafts within the budget ({_budget(drafter, req)}; {_floor(drafter, req)}),"
        f" {_who(refiner)} meets the floor but not the budget ({_floor(refiner, req)}; {_budget(refiner, req)})"
        " and refines the draft"
    )


def tight_budget_reason(req: RoutingRequest, p: ProviderView, fastest_cloud: ProviderView) -> str:
    return (
        f"the latency budget ({req.latency_budget_ms:.0f} ms) excludes every cloud provider"
        f" (fastest: {fastest_cloud.name!r} {_lat(fastest_cloud)});"
        f" {_who(p)} answers within it ({_lat(p)}) but below the quality floor ({_floor(p, req)})"
    )


def local_fallback_reason(req: RoutingRequest, p: ProviderView, cloud_notes: Sequence[str]) -> str:
    why = "; ".join(cloud_notes) if cloud_notes else "none is configured"
    short = []
    if req.quality_floor is not None and p.quality < req.quality_floor:
        short.append(_floor(p, req))
    if req.latency_budget_ms is not None and p.est_latency_ms > req.latency_budget_ms:
        short.append(_budget(p, req))
    return f"no cloud provider is usable ({why}); falling back to {_who(p)} ({'; '.join(short) or _floor(p, req)})"


def cloud_choice_reason(req: RoutingRequest, p: ProviderView, how: str) -> str:
    if how == "fastest":
        return (
            f"no provider meets the latency budget ({req.latency_budget_ms:.0f} ms);"
            f" {_who(p)} is the fastest meeting the quality floor ({_floor(p, req)}; {_lat(p)})"
        )
    if how == "highest quality":
        return f"no provider meets the quality floor; {_who(p)} has the highest quality ({_floor(p, req)})"
    return (
        "no local or private provider meets the quality floor and latency budget;"
        f" {_who(p)} has the best quality per cost among cloud providers meeting both"
        f" ({_floor(p, req)}; {_budget(p, req)}; est. cost {p.est_cost:.4g})"
    )
