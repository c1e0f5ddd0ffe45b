"""ContextInspector: what an agent works with, part by part, with token bars against its window.

For a cognitive agent (or a loop given directly) it shows the real :class:`loom.context.PromptBundle`
of its latest run: system, instructions, memory, messages and tools with the counts of the
tokenizer in use, and every item that was dropped or compacted, with the reason. For any other
agent it estimates: its description and subscriptions as "system", the events that reached it as
"messages", its capabilities as "tools".
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

import traitlets

from loom.context.tokens import estimate_tokens
from loom.errors import UsageError
from loom.events.qos import Overflow, QoS
from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html

__all__ = ["ContextInspector", "estimate_tokens"]

PARTS = ("system", "instructions", "memory", "messages", "tools")


def _loop_of(obj: Any) -> Any:
    """The cognitive loop behind ``obj`` (a loop, a CognitiveAgent, an SDK Agent or an agent core), or None."""
    for candidate in (obj, getattr(obj, "behavior", None), getattr(getattr(obj, "behavior", None), "agent", None)):
        if candidate is None:
            continue
        if hasattr(candidate, "last_bundle"):
            return candidate
        inner = getattr(candidate, "loop", None)
        if hasattr(inner, "last_bundle"):
            return inner
        behavior = getattr(candidate, "behavior", None)
        if hasattr(getattr(behavior, "loop", None), "last_bundle"):
            return behavior.loop
    return None


class ContextInspector(Inspector):
    """Shows one agent's context with token counts against its window.

    Args:
        source: an agent id, or a cognitive loop / CognitiveAgent / Agent (its latest prompt bundle).
        budget: the window the bars are drawn against (default: the bundle's own window, else 8000).
        bundle: optional ``() -> dict`` giving the parts (``system``, ``messages``, ``tools``...) yourself.
        history: how many recent events count as messages (estimated view).
    """

    _esm = asset("context_inspector.js")
    agent_id = traitlets.Unicode("").tag(sync=True)
    bundle = traitlets.Dict().tag(sync=True)
    budget = traitlets.Int(8000).tag(sync=True)

    def __init__(
        self,
        source: Any,
        rt: Any = None,
        *,
        budget: int | None = None,
        bundle: Callable[[], dict[str, Any]] | None = None,
        history: int = 20,
        **kw: Any,
    ) -> None:
        self._provider = bundle
        self._history: deque[dict[str, str]] = deque(maxlen=history)
        self._watch: Any = None
        self._patterns: tuple[str, ...] = ()
        self._fixed_budget = budget
        self._cog = None if isinstance(source, str) else _loop_of(source)
        if isinstance(source, str):
            agent_id = source
        elif self._cog is not None:
            agent_id = self._cog.agent_id
        else:
            raise UsageError(f"ContextInspector shows an agent id or a cognitive loop/agent, got {source!r}")
        super().__init__(rt, title=f"context of {agent_id}", agent_id=agent_id, budget=budget or 8000, **kw)
        if self._cog is None and agent_id not in self.rt.agents:
            self.close()
            raise UsageError(f"no agent {agent_id!r} in this runtime (agents: {[a.id for a in self.rt.agents]})")

    def _teardown(self) -> None:
        if self._watch is not None:
            self._watch.close()

    def _cognitive_loop(self) -> Any:
        if self._cog is not None:
            return self._cog
        return _loop_of(self.rt.agents.get(self.agent_id))

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

    def _estimated(self, raw: dict[str, Any]) -> dict[str, Any]:
        messages = [dict(m, tokens=estimate_tokens(str(m.get("content", "")))) for m in raw.get("messages", [])]
        tools = [dict(t, tokens=estimate_tokens(json.dumps(t, default=str))) for t in raw.get("tools", [])]
        system = str(raw.get("system", ""))
        tokens = {
            "system": estimate_tokens(system),
            "messages": sum(m["tokens"] for m in messages),
            "tools": sum(t["tokens"] for t in tools),
        }
        tokens["total"] = sum(tokens.values())
        window = self._fixed_budget or 8000
        return {
            "source": "estimated from the agent",
            "system": system,
            "messages": messages,
            "tools": tools,
            "tokens": tokens,
            "window": window,
            "reserve": 0,
            "tokenizer": "estimate:chars/4",
            "dropped": [],
            "compacted": [],
            "notes": [],
        }

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        loop = self._cognitive_loop() if self._provider is None else None
        last = getattr(loop, "last_bundle", None)
        if last is not None:
            bundle = dict(last.to_dict(), source=f"prompt bundle of {loop.agent_id}'s latest run")
        elif self._provider is not None:
            bundle = self._estimated(self._provider())
        else:
            if loop is None:
                self._follow()
            bundle = self._estimated(self._default_bundle())
            if loop is not None:
                bundle["notes"] = ["a cognitive agent: its prompt bundle shows here after its first run"]
        budget = self._fixed_budget or int(bundle.get("window") or 8000)
        if not force and bundle == self.bundle and budget == self.budget:
            return None
        return {"bundle": bundle, "budget": budget}

    def _static_html(self) -> str:
        tokens = self.bundle.get("tokens", {})
        rows = [
            [part, tokens[part], f"{100 * tokens[part] / max(self.budget, 1):.1f}%"] for part in PARTS if part in tokens
        ]
        note = f"window {self.budget} tokens · {self.bundle.get('tokenizer', '')}"
        if self.bundle.get("dropped"):
            note += f" · {len(self.bundle['dropped'])} dropped"
        return table_html(f"context of {self.agent_id}", ["part", "tokens", "of budget"], rows, note)
