"""ApprovalPanel: approve or deny a cognitive agent's dangerous tool calls from the notebook.

    panel = ApprovalPanel()
    loop = SimpleCognitiveLoop(CognitiveConfig(approve=panel), llm, rt.tools)
    panel            # shows each waiting call with Approve / Deny buttons

The panel is the approver: the run waits (the kernel stays responsive: widget messages are handled
while an async cell awaits) until a button is clicked or ``timeout`` passes, which denies.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anywidget
import traitlets

from loom.errors import UsageError
from loom.notebook._assets import asset

__all__ = ["ApprovalPanel"]


class ApprovalPanel(anywidget.AnyWidget):
    """An approver (``CognitiveConfig(approve=panel)``) with a front end.

    Args:
        timeout: seconds a call waits for a decision before it is denied (``None``: forever).
        history: decided calls kept in view.
    """

    _esm = asset("approval.js")
    _css = asset("loom.css")
    pending = traitlets.List().tag(sync=True)
    decided = traitlets.List().tag(sync=True)

    def __init__(self, *, timeout: float | None = 300.0, history: int = 20, **kw: Any) -> None:
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise UsageError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        super().__init__(**kw)
        self.timeout = timeout
        self.history = history
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._seq = 0
        self.on_msg(self._on_front_end)

    async def __call__(self, request: Any) -> bool:
        self._seq += 1
        key = f"a{self._seq}"
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        entry = {
            "id": key,
            "agent": request.agent_id,
            "tool": request.tool,
            "args": json.dumps(request.args, ensure_ascii=False, default=str)[:2000],
            "reason": request.reason,
            "since": time.time(),
        }
        self.pending = [*self.pending, entry]
        verdict, how = False, "timed out"
        try:
            async with asyncio.timeout(self.timeout):
                verdict = await future
            how = "approved" if verdict else "denied"
        except TimeoutError:
            pass
        finally:
            self._waiting.pop(key, None)
            self.pending = [p for p in self.pending if p["id"] != key]
            self.decided = [{**entry, "verdict": how}, *self.decided][: self.history]
        return verdict

    def decide(self, key: str, allow: bool) -> bool:
        """Decide call ``key`` (what the buttons do); False when nothing waits under that key."""
        future = self._waiting.get(key)
        if future is None or future.done():
            return False
        future.set_result(bool(allow))
        return True

    def _on_front_end(self, widget: Any, content: Any, buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if isinstance(content.get("decide"), str):
            self.decide(content["decide"], content.get("allow") is True)
        elif content.get("refresh"):
            # A view that renders while its model is still loading can miss the first update (a call
            # that began waiting at once): each new view asks for the state it should show.
            self.send_state(["pending", "decided"])
