"""ContextInspector: what an agent works with, split into parts with token-budget bars.

For now the parts come from the agent itself (its description and subscriptions as the
"system" part, the events that reached it as "messages", its capabilities as "tools"); a
cognitive agent will provide its real prompt bundle through ``bundle=``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

import traitlets

from loom.errors import UsageError
from loom.events.qos import Overflow, QoS
from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html

__all__ = ["ContextInspector", "estimate_tokens"]


def estimate_tokens(text: str) -> int:
    """A model-free estimate: about 4 characters per token."""
    return (len(text) + 3) // 4


class ContextInspector(Inspector):
    """Shows one agent's context as system / messages / tools with token estimates against a budget.

    Args:
        agent_id: the agent to show.
        budget: the token budget the bars are drawn against.
        bundle: optional ``() -> {"system": str, "messages": [{"role", "content"}], "tools": [dict]}``
            (a cognitive agent's prompt bundle); by default it is built from the agent.
        history: how many recent events count as messages.
    """

    _esm = asset("context_inspector.js")
    agent_id = traitlets.Unicode("").tag(sync=True)
    bundle = traitlets.Dict().tag(sync=True)
    budget = traitlets.Int(8000).tag(sync=True)

    def __init__(
        self,
        agent_id: str,
        rt: Any = None,
        *,
        budget: int = 8000,
        bundle: Callable[[], dict[str, Any]] | None = None,
        history: int = 20,
        **kw: Any,
    ) -> None:
        self._provider = bundle
        self._history: deque[dict[str, str]] = deque(maxlen=history)
        self._watch: Any = None
        self._patterns: tuple[str, ...] = ()
        super().__init__(rt, title=f"context of {agent_id}", agent_id=agent_id, budget=budget, **kw)
        if agent_id not in self.rt.agents:
            self.close()
            raise UsageError(f"no agent {agent_id!r} in this runtime (agents: {[a.id for a in self.rt.agents]})")

    def _teardown(self) -> None:
        if self._watch is not None:
            self._watch.close()

    def _follow(self) -> None:
        agent = self.rt.agents.get(self.agent_id)
        patterns = tuple(agent.topics) if agent is not None else ()
        if patterns != self._patterns:  # the agent (un)subscribed: follow it, keeping what is queued
            if self._watch is None and patterns:
                self._watch = self.rt.bus.subscribe(
                    list(patterns),
                    qos=QoS.REALTIME,
                    maxsize=256,
                    overflow=Overflow.DROP_OLDEST,
                    name=f"context-{self.agent_id}",
                )
            elif self._watch is not None:
                for p in set(self._patterns) - set(patterns):
                    self._watch.remove_pattern(p)
                for p in patterns:
                    if p not in self._patterns:
                        self._watch.add_pattern(p)
            self._patterns = patterns
        while self._watch is not None and self._watch.qsize():
            topic, event = self._watch.get_nowait()
            sender = event.metadata.get("sender") or event.source or "?"
            text = event.payload[:2000].decode("utf-8", errors="replace")
            self._history.append({"role": "event", "name": f"{event.type} from {sender} on {topic}", "content": text})

    def _default_bundle(self) -> dict[str, Any]:
        agent = self.rt.agents.get(self.agent_id)
        if agent is None:
            return {"system": f"(agent {self.agent_id} is gone)", "messages": [], "tools": []}
        system = (
            f"Agent {agent.id} ({agent.config.agent_type}), status {agent.status}.\n"
            f"Subscribed to: {', '.join(agent.topics)}.\n"
            f"Persistent state: {json.dumps(agent.state.snapshot()['persistent'])[:2000]}"
        )
        tools = [
            {"name": d.key, "description": d.description, "schema": dict(d.input_schema)}
            for d in self.rt.capabilities.list()
            if d.agent_id == agent.id
        ]
        return {"system": system, "messages": list(self._history), "tools": tools}

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        self._follow()
        raw = self._provider() if self._provider is not None else self._default_bundle()
        messages = [dict(m, tokens=estimate_tokens(str(m.get("content", "")))) for m in raw.get("messages", [])]
        tools = [dict(t, tokens=estimate_tokens(json.dumps(t, default=str))) for t in raw.get("tools", [])]
        system = str(raw.get("system", ""))
        bundle = {
            "system": system,
            "messages": messages,
            "tools": tools,
            "tokens": {
                "system": estimate_tokens(system),
                "messages": sum(m["tokens"] for m in messages),
                "tools": sum(t["tokens"] for t in tools),
            },
        }
        if not force and bundle == self.bundle:
            return None
        return {"bundle": bundle}

    def _static_html(self) -> str:
        tokens = self.bundle.get("tokens", {})
        rows = [
            [part, tokens.get(part, 0), f"{100 * tokens.get(part, 0) / max(self.budget, 1):.1f}%"]
            for part in ("system", "messages", "tools")
        ]
        return table_html(
            f"context of {self.agent_id}", ["part", "tokens (est.)", "of budget"], rows, f"budget {self.budget} tokens"
        )
