"""ReplayPanel: replay a recorded session into this runtime with Play / Pause / Step buttons.

    panel = loom.ReplayPanel("session.db", rt, paused=True)   # then Step through it, event by event
    panel

The replay runs as a task of the runtime; the panel shows where it stands (the record, its time on
the recording's clock, events so far) and the last events replayed, so a past session can be
re-watched and inspected one event at a time beside the other inspectors.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import traitlets

from loom.events.qos import Overflow, QoS
from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html
from loom.store.replay import ReplayControl, replay

__all__ = ["ReplayPanel"]


class ReplayPanel(Inspector):
    """Replays ``log`` onto ``rt``'s bus (see :func:`loom.store.replay`) under the panel's control.

    Args:
        log: the event log file.
        rt: the runtime to replay into (default ``loom.current()``): usually a fresh one.
        speed: ``1.0`` recorded timing, ``n`` n times faster, ``"max"`` no waiting.
        topics: only these patterns.
        paused: start paused (Step through from the first event).
    """

    _esm = asset("replay_panel.js")
    state = traitlets.Unicode("playing").tag(sync=True)
    position = traitlets.Int(0).tag(sync=True)
    recorded_s = traitlets.Float(0.0).tag(sync=True)
    events = traitlets.Int(0).tag(sync=True)
    recent = traitlets.List().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(
        self,
        log: str | Path,
        rt: Any = None,
        *,
        speed: float | str = 1.0,
        topics: Any = None,
        paused: bool = False,
        **kw: Any,
    ) -> None:
        self.control = ReplayControl(paused=paused)
        self._log, self._speed, self._topics = log, speed, topics
        self.summary: Any = None
        super().__init__(rt, title=f"replay of {Path(log).name}", **kw)
        self.on_msg(self._on_front_end)
        self._replay = self.rt.spawn(self._run(), name=f"loom.notebook.replay:{id(self):x}")

    def close(self) -> None:
        """Stop the replay (if it still runs) and close the panel."""
        replay_task = getattr(self, "_replay", None)
        if replay_task is not None and not replay_task.done():
            replay_task.cancel()
        super().close()

    def _setup(self) -> None:
        self._watch = self.rt.bus.subscribe(
            ">", qos=QoS.REALTIME, maxsize=256, overflow=Overflow.DROP_OLDEST, name="replay-panel"
        )
        self._recent: deque[dict[str, Any]] = deque(maxlen=12)

    def _teardown(self) -> None:
        self._watch.close()

    async def _run(self) -> None:
        try:
            self.summary = await replay(
                self.rt.bus, self._log, speed=self._speed, topics=self._topics, control=self.control
            )
        except Exception as exc:  # noqa: BLE001 - shown in the panel; the runtime goes on
            self.error = f"{type(exc).__name__}: {exc}"

    def _on_front_end(self, widget: Any, content: Any, buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        cmd = content.get("cmd")
        if cmd == "pause":
            self.control.pause()
        elif cmd == "play":
            self.control.resume()
        elif cmd == "step":
            self.control.step(1)
        self.flush(force=True)

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        got = False
        while self._watch.qsize():
            topic, event = self._watch.get_nowait()
            text = event.payload[:80].decode("utf-8", errors="replace")
            self._recent.appendleft({"topic": topic, "type": event.type, "payload": text})
            got = True
        c = self.control
        state = "done" if c.done else ("paused" if c.paused else "playing")
        changes = {"state": state, "position": c.position, "recorded_s": round(c.recorded_s, 3), "events": c.events}
        if not got and not force and all(getattr(self, k) == v for k, v in changes.items()):
            return None
        return {**changes, "recent": list(self._recent)}

    def _static_html(self) -> str:
        rows = [[r["topic"], r["type"], r["payload"]] for r in self.recent]
        note = f"{self.state}: {self.events} events, record {self.position}, {self.recorded_s:.3f} s"
        return table_html(self.title, ["topic", "type", "payload"], rows, note)
