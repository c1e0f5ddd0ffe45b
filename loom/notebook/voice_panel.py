"""VoicePanel: a voice pipeline at work: input level, VAD state, the running transcript, wake
events and what the agent answers and says (``%loom mic`` shows one)."""

from __future__ import annotations

from collections import deque
from typing import Any

import traitlets

from loom.events.qos import Overflow, QoS
from loom.notebook._assets import asset
from loom.notebook.base import Inspector, table_html

__all__ = ["VoicePanel"]

_KINDS = {
    "transcript.partial": "partial",
    "transcript.final": "heard",
    "stt.error": "error",
    "wake_word_detected": "wake",
    "user.query": "query",
    "voice.answer": "answer",
    "tts.start": "speaking",
    "tts.done": "spoke",
    "tts.error": "error",
}


class VoicePanel(Inspector):
    """Live view of a :class:`~loom.audio.VoicePipeline` (``pipeline``), from its stages and the bus."""

    _esm = asset("voice_panel.js")
    level = traitlets.Float(0.0).tag(sync=True)
    speaking = traitlets.Bool(False).tag(sync=True)
    talking = traitlets.Bool(False).tag(sync=True)  # the agent's voice is playing
    partial = traitlets.Unicode("").tag(sync=True)
    lines = traitlets.List().tag(sync=True)
    state = traitlets.Unicode("").tag(sync=True)
    stats = traitlets.Dict().tag(sync=True)

    def __init__(self, pipeline: Any, *, max_lines: int = 30, **kw: Any) -> None:
        self.pipeline = pipeline
        self.max_lines = max_lines
        super().__init__(pipeline.rt, title="voice", **kw)

    def _setup(self) -> None:
        t = self.pipeline.topics
        patterns = [t.transcript, t.wake, t.query, t.tts, "voice.answer"]
        self._sub = self.rt.bus.subscribe(
            patterns, qos=QoS.REALTIME, maxsize=1024, overflow=Overflow.DROP_OLDEST, name="voice-panel"
        )
        self._lines: deque[dict[str, Any]] = deque(maxlen=self.max_lines)
        self._partial = ""
        self._talking = False

    def _teardown(self) -> None:
        self._sub.close()

    def _collect(self, force: bool = False) -> dict[str, Any] | None:
        while self._sub.qsize():
            _, event = self._sub.get_nowait()
            kind = _KINDS.get(event.type)
            if kind is None:
                continue
            md = event.metadata
            if kind == "partial":
                self._partial = event.text()
                continue
            if kind == "heard":
                self._partial = ""
            if kind in ("speaking", "spoke", "error") and event.type.startswith("tts."):
                self._talking = kind == "speaking"
                if kind == "spoke" and md.get("interrupted") == "true":
                    kind = "interrupted"
                elif kind != "error":
                    continue
            text = md.get("text") or event.text() or md.get("phrase") or md.get("error", "")
            self._lines.append({"kind": kind, "text": text, "ts": event.timestamp_ms})
        p = self.pipeline
        vad = p.stages.get("vad")
        stats = {name: dict(stage.stats) for name, stage in [("source", p.source), *p.stages.items()]}
        return {
            "level": round(float(getattr(p.source, "level", 0.0)), 4),
            "speaking": bool(getattr(vad, "speaking", False)),
            "talking": self._talking,
            "partial": self._partial,
            "lines": list(self._lines),
            "state": f"{'listening' if p.running else 'stopped'} · {getattr(p.source, 'device_label', '')}",
            "stats": stats,
        }

    def _static_html(self) -> str:
        rows = [[ln["kind"], ln["text"]] for ln in self.lines[-15:]]
        return table_html("voice", ["", "text"], rows, self.state)
