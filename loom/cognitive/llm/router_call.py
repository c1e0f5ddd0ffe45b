"""One routed call: its attempts, the failover chain, and the hybrid route's draft and refine.

Kept apart from :mod:`router` (which decides, keeps health and reports) so that each reads on its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from loom.cognitive.llm.router_rules import RouteDecision
from loom.cognitive.llm.types import LLMError, LLMResponse, LLMTimeout, LLMUnavailable, Locality, Message, TokenSink

if TYPE_CHECKING:
    from loom.cognitive.llm.router import ModelRouter

__all__ = ["REFINE", "RoutedCall", "fails_over"]

REFINE = (
    "The answer above is a quick draft by a smaller model. Check it against the conversation and write "
    "the final answer to the user's last request: keep what is right, correct what is wrong."
)
"""What the cloud model of a hybrid route is asked after the local draft."""


def fails_over(exc: LLMError) -> bool:
    # A 400 or a refused context length is the request's fault: another provider would refuse it too.
    return isinstance(exc, LLMUnavailable | LLMTimeout) or exc.retryable


class RoutedCall:
    """One routed call's attempts, so a failover chain and a hybrid share their bookkeeping."""

    def __init__(self, router: ModelRouter, messages: Sequence[Message], kwargs: dict[str, Any], timeout: float | None):
        self.router = router
        self.messages = messages
        self.kwargs = kwargs
        self.timeout = timeout
        self.attempts: list[dict[str, Any]] = []

    async def one(
        self, name: str, on_token: TokenSink | None, role: str, messages: Sequence[Message] | None = None
    ) -> LLMResponse:
        started = time.perf_counter()
        try:
            response = await self.router._attempt(name, messages or self.messages, self.kwargs, on_token, self.timeout)
        except LLMError as exc:
            ms = round((time.perf_counter() - started) * 1000, 2)
            self.attempts.append({"provider": name, "role": role, "ok": False, "latency_ms": ms, "error": str(exc)})
            raise
        ms = round((time.perf_counter() - started) * 1000, 2)
        cost = self.router.cost_of(name, response.usage)
        self.attempts.append(
            {"provider": name, "role": role, "ok": True, "latency_ms": ms, "error": None, "cost": cost}
        )
        return response

    async def chain(
        self,
        names: Sequence[str | None],
        on_token: TokenSink | None,
        role: str = "answer",
        messages: Sequence[Message] | None = None,
    ) -> LLMResponse:
        """Try ``names`` in order, moving on after a failover-worthy error; skip ones marked unhealthy meanwhile."""
        router = self.router
        tried: list[str] = []
        for i, name in enumerate(n for n in names if n is not None):
            if i > 0 and router._health[name].unhealthy_until > router._clock():
                tried.append(f"{name!r} skipped (marked unhealthy by another call)")
                continue
            try:
                return await self.one(name, on_token, role, messages)
            except LLMError as exc:
                if not fails_over(exc):
                    raise
                tried.append(f"{name!r} ({type(exc).__name__}: {exc})")
        raise LLMUnavailable("router", f"every provider tried failed: {'; '.join(tried)}", retryable=True)

    async def hybrid(self, decision: RouteDecision, on_token: TokenSink | None, outcome: dict[str, Any]) -> LLMResponse:
        """Local draft (not streamed), then cloud refine (streamed); the draft alone if every refiner fails."""
        assert decision.draft_provider is not None and decision.provider is not None  # set by rule 5
        draft: LLMResponse | None = None
        try:
            draft = await self.one(decision.draft_provider, None, "draft")
        except LLMError:
            pass  # recorded in attempts; the refiner still answers
        clouds = [decision.provider] + [n for n in decision.fallbacks if not _is_near(self.router, n)]
        refine = None
        if draft is not None and draft.text and not draft.tool_calls:  # the refiner checks the draft
            refine = [*self.messages, {"role": "assistant", "content": draft.text}, {"role": "user", "content": REFINE}]
        try:
            refined = await self.chain(clouds, on_token, "refine", refine)
        except LLMError as exc:
            if draft is not None:
                outcome["note"] = f"refine failed ({exc}); returned the draft of {draft.provider!r}"
                return draft
            # No draft and no cloud: the remaining local/private fallbacks answer like any failover.
            nears = [n for n in decision.fallbacks if _is_near(self.router, n)]
            if not nears:
                raise
            return await self.chain(nears, on_token)
        return replace(refined, draft=draft)


def _is_near(router: ModelRouter, name: str) -> bool:
    return router._providers[name].config.resolved_locality is not Locality.CLOUD
