"""The model router's decision: per-provider snapshots, the rules, the decision record.

Pure: :func:`decide_route` reads only what it is given (a request and a snapshot of each provider's
locality, quality, estimated latency and cost, and health), so every rule is testable without a
model and the table in docs/cognitive.md can be checked against the code line by line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from loom.cognitive.llm.router_reasons import (
    cloud_choice_reason,
    defer_reason,
    drop_cost_reason,
    drop_privacy_reason,
    hybrid_reason,
    local_fallback_reason,
    local_reason,
    tight_budget_reason,
)
from loom.cognitive.llm.router_request import Privacy, RoutingRequest, in_boundary
from loom.cognitive.llm.types import Locality

__all__ = ["ProviderView", "Route", "RouteDecision", "decide_route"]


class Route(StrEnum):
    """Where a call goes: ``local`` (a local or private provider), ``cloud``, ``hybrid`` (local draft,
    cloud refine), ``local_fallback`` (local because no cloud is usable), ``defer`` (try later), ``drop``."""

    LOCAL = "local"
    CLOUD = "cloud"
    HYBRID = "hybrid"
    LOCAL_FALLBACK = "local_fallback"
    DEFER = "defer"
    DROP = "drop"


LatencySource = Literal["configured", "observed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderView:
    """One provider as a decision sees it: a snapshot, so the rules stay pure.

    ``est_cost`` is this request's estimated cost; ``reliability`` (0..1) comes from its call
    history; ``back_in_s`` is how long it stays marked unhealthy (0 when healthy).
    """

    name: str
    locality: Locality
    quality: float
    est_latency_ms: float
    latency_source: LatencySource
    est_cost: float
    healthy: bool = True
    back_in_s: float = 0.0
    reliability: float = 1.0

    @property
    def near(self) -> bool:
        """On this machine or on infrastructure you control (what "local" routes use)."""
        return self.locality is not Locality.CLOUD


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDecision:
    """Where one call goes and why.

    ``provider`` answers (for ``hybrid``: refines; ``draft_provider`` drafts); ``fallbacks`` are
    tried in order when it fails, all inside the privacy boundary, healthy and within the cost cap.
    ``confidence`` is the answering provider's quality times its observed reliability (0 when
    refused). ``retry_after_s`` says when a deferred request may succeed.
    """

    route: Route
    provider: str | None
    reason: str
    request: RoutingRequest
    fallbacks: tuple[str, ...] = ()
    draft_provider: str | None = None
    confidence: float = 0.0
    est_latency_ms: float = 0.0
    est_cost: float = 0.0
    latency_source: LatencySource = "configured"
    retry_after_s: float | None = None
    rule: int = 0
    considered: tuple[Mapping[str, Any], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON-able data (what ``router.decisions`` events carry)."""
        return {
            "route": self.route.value,
            "rule": self.rule,
            "provider": self.provider,
            "draft_provider": self.draft_provider,
            "fallbacks": list(self.fallbacks),
            "reason": self.reason,
            "confidence": round(self.confidence, 4),
            "est_latency_ms": round(self.est_latency_ms, 1),
            "est_cost": self.est_cost,
            "latency_source": self.latency_source,
            "retry_after_s": self.retry_after_s,
            "request": self.request.to_dict(),
            "considered": [dict(c) for c in self.considered],
        }


def _floor_ok(p: ProviderView, req: RoutingRequest) -> bool:
    return req.quality_floor is None or p.quality >= req.quality_floor


def _budget_ok(p: ProviderView, req: RoutingRequest) -> bool:
    return req.latency_budget_ms is None or p.est_latency_ms <= req.latency_budget_ms


def _cap_ok(p: ProviderView, req: RoutingRequest) -> bool:
    return req.cost_cap is None or p.est_cost <= req.cost_cap


def _below_floor(p: ProviderView, req: RoutingRequest) -> str:
    return f"quality {p.quality:.2f} < floor {req.quality_floor:.2f}"


def _why_not(p: ProviderView, req: RoutingRequest) -> str | None:
    if not in_boundary(req.privacy, p.locality):
        return f"privacy {req.privacy.value!r} excludes {p.locality.value} providers"
    if not _cap_ok(p, req):
        return f"est. cost {p.est_cost:.4g} > cap {req.cost_cap:g}"
    if not p.healthy:
        return f"unhealthy for {p.back_in_s:.1f} s more"
    return None


def _considered(views: Sequence[ProviderView], req: RoutingRequest) -> tuple[dict[str, Any], ...]:
    out = []
    for p in views:
        why = _why_not(p, req)
        out.append(
            {
                "name": p.name,
                "locality": p.locality.value,
                "eligible": why is None,
                "why_not": why,
                "quality": p.quality,
                "est_latency_ms": round(p.est_latency_ms, 1),
                "latency_source": p.latency_source,
                "est_cost": p.est_cost,
                "healthy": p.healthy,
                "meets_floor": _floor_ok(p, req),
                "meets_budget": _budget_ok(p, req),
            }
        )
    return tuple(out)


def _per_cost(p: ProviderView) -> float:
    # A free cloud (a trial tier, a price left at 0) beats every priced one at the same quality.
    return p.quality / p.est_cost if p.est_cost > 0 else math.inf


def _fallback_order(req: RoutingRequest) -> Any:
    # Best fit first; "sensitive" and stricter levels try local/private before cloud at equal fit,
    # which is all that distinguishes sensitive from public (their boundary is the same).
    prefer_near = req.privacy is not Privacy.PUBLIC

    def key(p: ProviderView) -> tuple[Any, ...]:
        near_rank = 0 if (p.near or not prefer_near) else 1
        return (not _floor_ok(p, req), not _budget_ok(p, req), near_rank, -p.quality, p.est_cost, p.est_latency_ms)

    return key


def decide_route(req: RoutingRequest, views: Sequence[ProviderView]) -> RouteDecision:
    """Apply the routing rules, in order, to a request and a snapshot of every provider.

    The rules (docs/cognitive.md, "Model router", has the same table):

    1. no provider inside the privacy boundary → ``drop``;
    2. none of those within the cost cap → ``drop``;
    3. all of those unhealthy → ``defer`` (with when the first comes back);
    4. a local/private one meets the quality floor and the latency budget → ``local``;
    5. a local/private one meets the budget (not the floor), a cloud meets the floor (not the budget)
       and no cloud meets both → ``hybrid`` (local draft, cloud refine);
    6. a latency budget is set, some cloud is available but none meets the budget, and a
       local/private one does → ``local`` (the best of those within budget, below the floor);
    7. no cloud meets the quality floor (or none is available) and a local/private one is → ``local_fallback``;
    8. otherwise ``cloud``: the best quality per cost among clouds meeting the floor and the budget,
       else the fastest meeting the floor, else (nothing meets the floor) the best quality.
    """
    considered = _considered(views, req)
    inside = [p for p in views if in_boundary(req.privacy, p.locality)]
    if not inside:
        return RouteDecision(
            route=Route.DROP, provider=None, rule=1, request=req, considered=considered,
            reason=drop_privacy_reason(req.privacy, views),
        )  # fmt: skip
    affordable = [p for p in inside if _cap_ok(p, req)]
    if not affordable:
        return RouteDecision(
            route=Route.DROP, provider=None, rule=2, request=req, considered=considered,
            reason=drop_cost_reason(req, inside),
        )  # fmt: skip
    healthy = [p for p in affordable if p.healthy]
    if not healthy:
        first = min(affordable, key=lambda p: p.back_in_s)
        return RouteDecision(
            route=Route.DEFER, provider=None, rule=3, request=req, considered=considered,
            reason=defer_reason(req, first), retry_after_s=round(first.back_in_s, 3),
        )  # fmt: skip

    near = [p for p in healthy if p.near]
    clouds = [p for p in healthy if not p.near]
    order = _fallback_order(req)

    def pick(route: Route, rule: int, chosen: ProviderView, reason: str) -> RouteDecision:
        rest = sorted((p for p in healthy if p is not chosen), key=order)
        return RouteDecision(
            route=route, provider=chosen.name, rule=rule, request=req, considered=considered, reason=reason,
            fallbacks=tuple(p.name for p in rest), confidence=chosen.quality * chosen.reliability,
            est_latency_ms=chosen.est_latency_ms, est_cost=chosen.est_cost, latency_source=chosen.latency_source,
        )  # fmt: skip

    near_fit = [p for p in near if _floor_ok(p, req) and _budget_ok(p, req)]
    if near_fit:
        best = min(near_fit, key=lambda p: (-p.quality, p.est_latency_ms, p.est_cost))
        return pick(Route.LOCAL, 4, best, local_reason(req, best))

    near_fast = [p for p in near if _budget_ok(p, req)]
    cloud_good = [p for p in clouds if _floor_ok(p, req)]
    cloud_fit = [p for p in cloud_good if _budget_ok(p, req)]
    if near_fast and cloud_good and not cloud_fit:
        drafter = max(near_fast, key=lambda p: (p.quality, -p.est_latency_ms))
        refiner = min(cloud_good, key=lambda p: (p.est_latency_ms, -p.quality))
        sources = {drafter.latency_source, refiner.latency_source}
        rest = sorted((p for p in healthy if p is not drafter and p is not refiner), key=order)
        return RouteDecision(
            route=Route.HYBRID, provider=refiner.name, draft_provider=drafter.name, rule=5, request=req,
            considered=considered, reason=hybrid_reason(req, drafter, refiner),
            fallbacks=tuple(p.name for p in rest), confidence=refiner.quality * refiner.reliability,
            est_latency_ms=drafter.est_latency_ms + refiner.est_latency_ms,
            est_cost=drafter.est_cost + refiner.est_cost,
            latency_source="observed" if "observed" in sources else "configured",
        )  # fmt: skip

    if req.latency_budget_ms is not None and clouds and near_fast and not any(_budget_ok(p, req) for p in clouds):
        best = max(near_fast, key=lambda p: (p.quality, -p.est_latency_ms))
        fastest_cloud = min(clouds, key=lambda p: p.est_latency_ms)
        return pick(Route.LOCAL, 6, best, tight_budget_reason(req, best, fastest_cloud))

    if near and not cloud_good:
        best = min(near, key=lambda p: (not _floor_ok(p, req), not _budget_ok(p, req), -p.quality, p.est_latency_ms))
        notes = [f"{p.name!r}: {_why_not(p, req) or _below_floor(p, req)}" for p in views if not p.near]
        return pick(Route.LOCAL_FALLBACK, 7, best, local_fallback_reason(req, best, notes))

    if cloud_fit:
        best = max(cloud_fit, key=lambda p: (_per_cost(p), p.quality, -p.est_latency_ms))
        how = "best quality per cost"
    elif cloud_good:
        best = min(cloud_good, key=lambda p: (p.est_latency_ms, -p.quality))
        how = "fastest"
    else:
        best = max(clouds, key=lambda p: (p.quality, -p.est_cost))
        how = "highest quality"
    return pick(Route.CLOUD, 8, best, cloud_choice_reason(req, best, how))
