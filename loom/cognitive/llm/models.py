"""How the runtime gets its models: a router over the providers, wired to the bus by narrow callables."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from loom.cognitive.llm.client import LLMClient
from loom.cognitive.llm.generate_tool import LLMGenerateTool
from loom.cognitive.llm.router import ModelRouter
from loom.cognitive.llm.types import LLMConfig
from loom.errors import UsageError
from loom.events.event import Event

if TYPE_CHECKING:
    from loom.events.bus import EventBus

__all__ = ["DECISIONS_TOPIC", "build_router"]

DECISIONS_TOPIC = "router.decisions"


def build_router(providers: Iterable[Any], bus: EventBus, **router_options: Any) -> tuple[ModelRouter, LLMGenerateTool]:
    """A :class:`ModelRouter` whose decisions go to ``router.decisions`` and its ``llm.generate`` tool
    whose streamed fragments go to the topic a caller names. Events are built only when someone listens."""
    models: list[Any] = []
    made: list[str] = []  # closed with the router; clients the caller passed stay the caller's
    for p in providers:
        if isinstance(p, LLMConfig):
            models.append(LLMClient(p))
            made.append(p.name)
        elif callable(getattr(p, "chat", None)) and isinstance(getattr(p, "config", None), LLMConfig):
            models.append(p)
        else:
            raise UsageError(f"a provider is an LLMConfig or an LLMClient, got {p!r}")

    def emit(decision: dict[str, Any]) -> None:
        if bus.closed or not bus.has_subscribers(DECISIONS_TOPIC):
            return
        payload = json.dumps(decision, ensure_ascii=False, default=str).encode()
        meta = {"route": str(decision.get("route", "")), "provider": str(decision.get("provider") or "")}
        bus.publish_nowait(DECISIONS_TOPIC, Event("router.decision", payload, source="loom.router", metadata=meta))

    def publish(topic: str, fragment: str) -> None:
        if not bus.closed and bus.has_subscribers(topic):
            bus.publish_nowait(topic, Event("llm.token", fragment.encode(), source="loom.llm"))

    router = ModelRouter(models, emit=emit, owned=made, **router_options)
    return router, LLMGenerateTool(router, publish=publish)
