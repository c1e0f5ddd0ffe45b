"""The tools a cognitive loop offers its model, and how a call the model asked for becomes an observation.

Every call goes through the :class:`~loom.ToolRegistry` (native tools, agents' capabilities, MCP
servers, remote agents alike) under the OpenAI-legal names the registry maps back. Nothing the
model asks for can crash a run: an unknown tool, arguments that are not JSON, a tool that fails or
hangs, a dangerous call nobody approved — each is an observation the model reads next turn.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from loom.cognitive.config import ApprovalRequest, CognitiveConfig
from loom.cognitive.llm.types import ToolCall

if TYPE_CHECKING:
    from loom.tools.registry import ToolRegistry

__all__ = ["Observation", "ToolBelt"]

_OBSERVATION_LIMIT = 64_000  # characters of one observation before the context offloads it anyway


@dataclass(frozen=True, slots=True)
class Observation:
    """What came of one tool call: ``ok``, the output (or the error), and how the model is told."""

    call_id: str
    tool: str  # the registry name ("" when the model named no known tool)
    args: dict[str, Any]
    ok: bool
    output: Any
    text: str
    code: str = ""


def _render(output: Any) -> str:
    if isinstance(output, str):
        return output
    try:
        return json.dumps(output, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(output)


class ToolBelt:
    """The tools one loop may use (``config.tools`` patterns over the registry) and their calls."""

    def __init__(self, registry: ToolRegistry | None, config: CognitiveConfig) -> None:
        self.registry = registry
        self.config = config
        self._offered: dict[str, str] = {}  # OpenAI function name → registry name

    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI function definitions of the tools offered now (the registry can change between runs)."""
        registry = self.registry
        self._offered = {}
        if registry is None:
            return []
        patterns = self.config.tools
        out: list[dict[str, Any]] = []
        for schema in registry.list_tools("openai"):
            fn = schema["function"]["name"]
            name = registry.resolve_openai_name(fn)
            if name is None:
                continue
            if patterns is None:
                if name.startswith("llm."):  # a model calling itself through a tool is never offered unasked
                    continue
            elif not any(fnmatchcase(name, p) for p in patterns):
                continue
            if len(out) >= self.config.max_tools:
                break
            self._offered[fn] = name
            out.append(schema)
        return out

    def dangerous(self, name: str) -> bool:
        if any(fnmatchcase(name, p) for p in self.config.dangerous):
            return True
        tool = self.registry.get(name) if self.registry is not None else None
        return bool(getattr(tool, "dangerous", False))

    async def call_all(self, calls: tuple[ToolCall, ...], *, agent_id: str, run_id: str) -> list[Observation]:
        """Run one turn's calls concurrently (at most ``max_parallel_tools`` at once), results in call order."""
        if len(calls) == 1:
            return [await self.call(calls[0], agent_id=agent_id, run_id=run_id)]
        gate = asyncio.Semaphore(self.config.max_parallel_tools)

        async def one(call: ToolCall) -> Observation:
            async with gate:
                return await self.call(call, agent_id=agent_id, run_id=run_id)

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(c), name=f"loom.tool:{c.name}") for c in calls]
        return [t.result() for t in tasks]

    def resolve(self, fn_name: str) -> str | None:
        """The registry name of an offered tool the model called (by its OpenAI name or its own)."""
        name = self._offered.get(fn_name)
        if name is None and fn_name in self._offered.values():
            name = fn_name  # the model used the dotted name itself
        return name

    async def call(self, call: ToolCall, *, agent_id: str, run_id: str) -> Observation:
        name = self.resolve(call.name)
        if name is None:
            known = ", ".join(sorted(self._offered)) or "none"
            text = f"ERROR NOT_FOUND: there is no tool named {call.name!r}. Tools you can call: {known}."
            return Observation(call.id, "", {}, False, None, text, "NOT_FOUND")
        try:
            args = call.parsed()
        except ValueError as exc:
            text = f"ERROR INVALID_PARAMS: {exc}. Call {call.name} again with a JSON object as arguments."
            return Observation(call.id, name, {}, False, None, text, "INVALID_PARAMS")
        if self.dangerous(name):
            allowed, why = await self._approve(ApprovalRequest(agent_id, run_id, name, args, self._reason(name)))
            if not allowed:
                text = f"DENIED: the call {name}({_render(args)[:300]}) was not approved ({why}). Do not retry it."
                return Observation(call.id, name, args, False, None, text, "DENIED")
        assert self.registry is not None
        result = await self.registry.invoke(
            name, args, timeout=self.config.tool_timeout, call_id=None, caller=f"agent.{agent_id}"
        )
        if result.ok:
            text = _render(result.output)
            if len(text) > _OBSERVATION_LIMIT:
                text = text[:_OBSERVATION_LIMIT] + f"… [{len(text) - _OBSERVATION_LIMIT} more characters cut]"
            return Observation(call.id, name, args, True, result.output, text)
        err = result.error
        code = err.code if err is not None else "ERROR"
        message = err.message if err is not None else "failed"
        return Observation(call.id, name, args, False, None, f"ERROR {code}: {message}", code)

    def _reason(self, name: str) -> str:
        if any(fnmatchcase(name, p) for p in self.config.dangerous):
            return f"{name} is listed as dangerous: it can change files or run commands"
        return f"{name} is marked dangerous by its provider"

    async def _approve(self, request: ApprovalRequest) -> tuple[bool, str]:
        approve = self.config.approve
        if approve is None:
            return False, "no approver is configured: pass CognitiveConfig(approve=...) to allow dangerous tools"
        try:
            verdict = approve(request)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception as exc:  # noqa: BLE001 - a broken approver denies; the run goes on
            return False, f"the approver failed: {type(exc).__name__}: {exc}"
        return (True, "approved") if verdict is True else (False, "denied by the approver")


def observation_payload(obs: Observation) -> Mapping[str, Any]:
    """What the context store keeps of an observation (its output when it succeeded, else the error)."""
    return {"output": obs.output} if obs.ok else {"error": obs.text, "code": obs.code}
