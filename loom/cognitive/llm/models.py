"""How the runtime gets its models: a router over the providers, reporting through the runtime's instruments."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from loom.cognitive.llm.client import LLMClient
from loom.cognitive.llm.generate_tool import LLMGenerateTool
from loom.cognitive.llm.router import ModelRouter
from loom.cognitive.llm.types import LLMConfig
from loom.errors import UsageError
from loom.events.event import Event
from loom.telemetry.seam import Instruments

__all__ = ["DECISIONS_TOPIC", "build_router"]

DECISIONS_TOPIC = "router.decisions"


def build_router(
    providers: Iterable[Any], instruments: Instruments, **router_options: Any
) -> tuple[ModelRouter, LLMGenerateTool]:
    """A :class:`ModelRouter` whose decisions are notes on ``router.decisions`` and its ``llm.generate``
    tool whose streamed fragments are notes on the topic a caller names; clients made here report
    their calls (``llm.generate`` spans) through ``instruments``. Notes are built only when someone listens."""
    models: list[Any] = []
    made: list[str] = []  # closed with the router; clients the caller passed stay the caller's
    for p in providers:
        if isinstance(p, LLMConfig):
            client = LLMClient(p)
            client.instruments = instruments
            models.append(client)
            made.append(p.name)
        elif callable(getattr(p, "chat", None)) and isinstance(getattr(p, "config", None), LLMConfig):
            models.append(p)
        else:
            raise UsageError(f"a provider is an LLMConfig or an LLMClient, got {p!r}")

    def emit(decision: dict[str, Any]) -> None:
        if not instruments.watched(DECISIONS_TOPIC):
            return
        payload = json.dumps(decision, ensure_ascii=False, default=str).encode()
        meta = {"route": str(decision.get("route", "")), "provider": str(decision.get("provider") or "")}
        instruments.note(DECISIONS_TOPIC, Event("router.decision", payload, source="loom.router", metadata=meta))

    def publish(topic: str, fragment: str) -> None:
        if instruments.watched(topic):
            instruments.note(topic, Event("llm.token", fragment.encode(), source="loom.llm"))

    router = ModelRouter(models, emit=emit, owned=made, **router_options)
    return router, LLMGenerateTool(router, publish=publish)
