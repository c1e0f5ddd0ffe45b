"""The model router: one :class:`~loom.cognitive.llm.types.ChatModel` over several providers.

Each call is routed by its :class:`RoutingRequest` (privacy, latency budget, cost cap, quality
floor) with the rules of :func:`~loom.cognitive.llm.router_rules.decide_route`; a provider that is
down, times out or fails retryably is marked unhealthy for a while and the call moves to the next
fallback, never across the privacy boundary. Latency estimates follow what calls actually took
(an EWMA), and every decision with its outcome goes to ``emit`` (the runtime publishes it on
``router.decisions``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from loom.cognitive.llm.router_call import RoutedCall, fails_over
from loom.cognitive.llm.router_request import Privacy, RoutingRequest, estimate_tokens
from loom.cognitive.llm.router_rules import ProviderView, Route, RouteDecision, decide_route
from loom.cognitive.llm.types import (
    ChatModel,
    LLMError,
    LLMResponse,
    Message,
    TokenSink,
    Usage,
)
from loom.errors import UsageError

__all__ = [
    "ModelRouter",
    "Privacy",
    "Route",
    "RouteDecision",
    "RoutedModel",
    "RoutingRefused",
    "RoutingRequest",
    "estimate_tokens",
]

log = logging.getLogger("loom.router")

OBSERVED_AFTER = 3
"""Successful calls before a provider's observed latency replaces its configured estimate."""


class RoutingRefused(LLMError):
    """The router would not send the call anywhere (route ``defer`` or ``drop``); ``decision`` says why."""

    def __init__(self, decision: RouteDecision) -> None:
        self.decision = decision
        super().__init__(
            "router", f"{decision.route.value}: {decision.reason}", retryable=decision.route is Route.DEFER
        )


@dataclass(slots=True)
class _Health:
    unhealthy_until: float = -math.inf
    last_error: str | None = None
    ewma_ms: float | None = None
    observed: int = 0
    calls: int = 0
    failures: int = 0
    spend: float = 0.0


class ModelRouter:
    """Routes each chat call to one of several providers, with failover inside the privacy boundary.

    Args:
        providers: chat models with a ``.config`` (:class:`~loom.cognitive.llm.types.LLMConfig`:
            name, locality, expected latency, prices, quality), typically ``LLMClient``\\ s.
        emit: called with each decision and its outcome as a JSON-able dict (its errors are logged, never raised).
        unhealthy_for: seconds a failed provider is skipped before it is tried again.
        ewma_alpha: weight of the newest latency in the observed-latency average (0..1].
        clock: monotonic seconds, for health expiry (tests inject one).
        default_request: the request for calls that pass none (default: ``RoutingRequest()``, sensitive).
        keep: how many recent decisions :meth:`recent` can return.
        owned: names of the providers :meth:`aclose` closes (default: all); the others are the caller's.

    Raises:
        UsageError: no providers, a provider without ``.config``, two with one name, or a bad argument.
    """

    routes_requests = True  # the cognitive loop passes its RoutingRequest to models that say so

    def __init__(
        self,
        providers: Sequence[ChatModel],
        *,
        emit: Callable[[dict[str, Any]], None] | None = None,
        unhealthy_for: float = 30.0,
        ewma_alpha: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        default_request: RoutingRequest | None = None,
        keep: int = 200,
        owned: Iterable[str] | None = None,
    ) -> None:
        if not providers:
            raise UsageError("ModelRouter needs at least one provider")
        self._providers: dict[str, Any] = {}
        for p in providers:
            name = getattr(getattr(p, "config", None), "name", None)
            if not isinstance(name, str):
                raise UsageError(f"ModelRouter provider {p!r} has no .config.name (pass LLMClient instances)")
            if name in self._providers:
                raise UsageError(f"ModelRouter provider names must be unique; {name!r} appears twice")
            self._providers[name] = p
        if not unhealthy_for >= 0:
            raise UsageError(f"ModelRouter unhealthy_for must be >= 0 seconds, got {unhealthy_for!r}")
        if not 0 < ewma_alpha <= 1:
            raise UsageError(f"ModelRouter ewma_alpha must be within (0, 1], got {ewma_alpha!r}")
        if default_request is not None and not isinstance(default_request, RoutingRequest):
            raise UsageError(f"ModelRouter default_request must be a RoutingRequest, got {default_request!r}")
        self._emit = emit
        self._owned = None if owned is None else frozenset(owned)
        self._unhealthy_for = float(unhealthy_for)
        self._alpha = float(ewma_alpha)
        self._clock = clock
        self._default = default_request or RoutingRequest()
        self._health = {name: _Health() for name in self._providers}
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)

    @property
    def providers(self) -> Mapping[str, ChatModel]:
        """Name → provider, in the order given."""
        return dict(self._providers)

    @property
    def default_request(self) -> RoutingRequest:
        return self._default

    def using(self, request: RoutingRequest) -> RoutedModel:
        """A ChatModel that routes every call with ``request`` (hand it to a cognitive loop)."""
        return RoutedModel(self, request)

    # -- decisions ------------------------------------------------------------------------------

    def _view(self, name: str, input_tokens: int, output_tokens: int, now: float) -> ProviderView:
        cfg = self._providers[name].config
        h = self._health[name]
        observed = h.observed >= OBSERVED_AFTER and h.ewma_ms is not None
        attempts = h.calls
        return ProviderView(
            name=name,
            locality=cfg.resolved_locality,
            quality=float(cfg.quality),
            est_latency_ms=h.ewma_ms if observed and h.ewma_ms is not None else float(cfg.expected_latency_ms),
            latency_source="observed" if observed else "configured",
            est_cost=(input_tokens * cfg.cost_per_1k_input + output_tokens * cfg.cost_per_1k_output) / 1000,
            healthy=h.unhealthy_until <= now,
            back_in_s=max(0.0, h.unhealthy_until - now),
            # Laplace-smoothed success rate: 1.0 before any call, drops with each failure.
            reliability=(attempts - h.failures + 1) / (attempts + 1),
        )

    def decide(self, request: RoutingRequest | None = None, messages: Sequence[Message] | None = None) -> RouteDecision:
        """Where a call with ``request`` and ``messages`` would go now, and why (no I/O)."""
        req = request if request is not None else self._default
        if not isinstance(req, RoutingRequest):
            raise UsageError(f"request must be a RoutingRequest, got {req!r}")
        tokens_in = req.input_tokens if req.input_tokens is not None else estimate_tokens(messages)
        now = self._clock()
        views = [self._view(name, tokens_in, req.output_tokens, now) for name in self._providers]
        return decide_route(req, views)

    def health(self) -> dict[str, dict[str, Any]]:
        """Per provider: healthy, unhealthy_until (clock time), ewma_ms, calls, failures, spend, last_error."""
        now = self._clock()
        return {
            name: {
                "healthy": h.unhealthy_until <= now,
                "unhealthy_until": h.unhealthy_until if h.unhealthy_until > now else None,
                "ewma_ms": None if h.ewma_ms is None else round(h.ewma_ms, 2),
                "observed": h.observed,
                "calls": h.calls,
                "failures": h.failures,
                "spend": h.spend,
                "last_error": h.last_error,
            }
            for name, h in self._health.items()
        }

    def recent(self, n: int = 50) -> list[dict[str, Any]]:
        """The last ``n`` decisions with their outcomes, oldest first."""
        return list(self._recent)[-n:] if n > 0 else []

    # -- calls ----------------------------------------------------------------------------------

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        request: RoutingRequest | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_token: TokenSink | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        """Route and send one chat call; ``response.provider`` names who answered.

        Raises:
            RoutingRefused: the route is ``defer`` or ``drop`` (``.decision`` says why).
            LLMUnavailable: every provider tried failed (each is named with its error).
            LLMError: a provider refused the request itself (not retried elsewhere).
        """
        decision = self.decide(request, messages)
        kwargs = {"tools": tools, "tool_choice": tool_choice, "temperature": temperature, "max_tokens": max_tokens}
        call = RoutedCall(self, messages, kwargs, timeout)
        outcome: dict[str, Any] = {"answered_by": None, "attempts": call.attempts, "error": None, "note": None}
        started = time.perf_counter()
        try:
            if decision.route in (Route.DEFER, Route.DROP):
                raise RoutingRefused(decision)
            if decision.route is Route.HYBRID:
                response = await call.hybrid(decision, on_token, outcome)
            else:
                response = await call.chain([decision.provider, *decision.fallbacks], on_token)
            outcome["answered_by"] = response.provider
            return response
        except BaseException as exc:  # recorded for the outcome, then re-raised untouched
            outcome["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            outcome["failovers"] = [a["provider"] for a in call.attempts if not a["ok"] and a["role"] != "draft"]
            outcome["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
            outcome["cost"] = sum(a.get("cost", 0.0) for a in call.attempts)
            self._record(decision, outcome)

    def _record(self, decision: RouteDecision, outcome: dict[str, Any]) -> None:
        entry = decision.to_dict()
        entry["outcome"] = outcome
        entry["at"] = time.time()
        self._recent.append(entry)
        if self._emit is not None:
            try:
                self._emit(entry)
            except Exception:  # noqa: BLE001 - an observer must never break a model call
                log.warning("router emit failed; the call is unaffected", exc_info=True)

    async def _attempt(
        self,
        name: str,
        messages: Sequence[Message],
        kwargs: dict[str, Any],
        on_token: TokenSink | None,
        timeout: float | None,
    ) -> LLMResponse:
        provider = self._providers[name]
        h = self._health[name]
        started = time.perf_counter()
        h.calls += 1
        try:
            response = await provider.chat(messages, on_token=on_token, timeout=timeout, **kwargs)
        except LLMError as exc:
            if fails_over(exc):
                h.failures += 1
                h.unhealthy_until = self._clock() + self._unhealthy_for
            h.last_error = f"{type(exc).__name__}: {exc}"
            raise
        # The provider's own figure is its HTTP time; ours would add event-loop scheduling noise.
        latency = response.latency_ms if response.latency_ms > 0 else (time.perf_counter() - started) * 1000
        h.ewma_ms = latency if h.ewma_ms is None else self._alpha * latency + (1 - self._alpha) * h.ewma_ms
        h.observed += 1
        h.unhealthy_until = -math.inf
        h.spend += self.cost_of(name, response.usage)
        if response.provider != name:  # whoever answered is the router's provider name, not the client's guess
            response = replace(response, provider=name)
        return response

    def cost_of(self, name: str, usage: Usage) -> float:
        """What ``usage`` costs at provider ``name``'s prices."""
        cfg = self._providers[name].config
        return (usage.prompt_tokens * cfg.cost_per_1k_input + usage.completion_tokens * cfg.cost_per_1k_output) / 1000

    async def aclose(self) -> None:
        """Close the providers it owns (all of them unless ``owned=`` said otherwise; all are tried,
        the first error is raised after)."""
        errors: list[Exception] = []
        for name, provider in self._providers.items():
            if self._owned is not None and name not in self._owned:
                continue
            close = getattr(provider, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception as exc:  # noqa: BLE001 - collected: the others still close
                errors.append(exc)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> ModelRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        names = ", ".join(f"{n}({p.config.resolved_locality.value})" for n, p in self._providers.items())
        return f"<ModelRouter {names}>"


class RoutedModel:
    """A :class:`ModelRouter` bound to one :class:`RoutingRequest`: a plain ChatModel for a cognitive loop."""

    routes_requests = True

    def __init__(self, router: ModelRouter, request: RoutingRequest) -> None:
        self.router = router
        self.request = request

    async def chat(
        self, messages: Sequence[Message], *, request: RoutingRequest | None = None, **kwargs: Any
    ) -> LLMResponse:
        """Same as :meth:`ModelRouter.chat` with this request; a ``request`` given here adds to it
        (see :meth:`RoutingRequest.narrowed_by`: it may tighten the privacy, never loosen it)."""
        return await self.router.chat(messages, request=self.request.narrowed_by(request), **kwargs)

    async def aclose(self) -> None:
        """Nothing to close: the router owns its providers."""
