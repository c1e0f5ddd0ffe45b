"""Message sequence diagrams drawn from what really crossed the bus.

A :class:`SequenceRecorder` watches the bus; :meth:`SequenceRecorder.figure` draws one lane per
participant and one arrow per delivery, in order. Receivers are the agents whose subscriptions
match the topic; a thread's reply topic goes back to whoever opened the thread; a topic nobody
is registered for gets a lane of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loom.events.qos import Overflow, QoS
from loom.events.topics import topic_matches

__all__ = ["Message", "SequenceRecorder"]


@dataclass(frozen=True, slots=True)
class Message:
    """One arrow: ``sender`` published ``type`` on ``topic``, received by ``receivers``."""

    sender: str
    receivers: tuple[str, ...]
    type: str
    topic: str
    ts_ms: int


class SequenceRecorder:
    """Record the events on ``patterns`` (minus ``exclude``) for a sequence diagram."""

    def __init__(self, rt: Any = None, patterns: tuple[str, ...] = (">",), exclude: tuple[str, ...] = ("system.>",)):
        from loom.runtime import current

        self.rt = rt or current()
        self.exclude = exclude
        self._sub = self.rt.bus.subscribe(
            list(patterns), qos=QoS.REALTIME, maxsize=4096, overflow=Overflow.DROP_OLDEST, name="sequence"
        )
        self._messages: list[Message] = []
        self._thread_owner: dict[str, str] = {}

    def _drain(self) -> None:
        directory = self.rt.directory
        while self._sub.qsize():
            topic, event = self._sub.get_nowait()
            if any(topic_matches(p, topic) for p in self.exclude):
                continue
            md = event.metadata
            sender = (md.get("sender") or event.source or "?").removeprefix("agent.")
            thread = md.get("thread_id", "")
            self._thread_owner.setdefault(thread, sender)
            receivers = tuple(i.agent_id for i in directory.by_topic(topic) if i.agent_id != sender)
            if not receivers:
                parts = topic.split(".")
                if parts[0] == "thread" and parts[-1] == "reply":
                    owner = self._thread_owner.get(".".join(parts[1:-1]), "")
                    receivers = (owner,) if owner and owner != sender else (topic,)
                else:
                    receivers = (topic,)
            self._messages.append(Message(sender, receivers, event.type, topic, event.timestamp_ms))

    def messages(self) -> list[Message]:
        """Everything recorded so far."""
        self._drain()
        return list(self._messages)

    def clear(self) -> None:
        self._drain()
        self._messages.clear()

    def close(self) -> None:
        self._sub.close()

    def figure(self, title: str = "", *, width: float = 9.0) -> Any:
        """Draw the recorded sequence with matplotlib; returns the Figure."""
        import matplotlib.pyplot as plt

        msgs = self.messages()
        lanes: list[str] = []
        for m in msgs:
            for who in (m.sender, *m.receivers):
                if who not in lanes:
                    lanes.append(who)
        rows = sum(len(m.receivers) for m in msgs)
        fig, ax = plt.subplots(figsize=(width, 1.2 + 0.32 * max(rows, 1)))
        x = {lane: i for i, lane in enumerate(lanes)}
        top = rows + 0.5
        for lane, i in x.items():
            ax.plot([i, i], [0, top], color="#9ca3af", lw=1, zorder=1)
            ax.text(i, top + 0.2, lane, ha="center", va="bottom", fontsize=9, weight="bold", color="#1a4d8f")
        y = rows
        for m in msgs:
            for r in m.receivers:
                x0, x1 = x[m.sender], x[r]
                ax.annotate("", xy=(x1, y), xytext=(x0, y), arrowprops={"arrowstyle": "->", "color": "#1f2937"})
                ax.text((x0 + x1) / 2, y + 0.08, m.type, ha="center", va="bottom", fontsize=8)
                y -= 1
        ax.set_xlim(-0.6, max(len(lanes) - 0.4, 0.6))
        ax.set_ylim(-0.2, top + 0.8)
        ax.set_axis_off()
        if title:
            ax.set_title(title, fontsize=11, pad=18)
        fig.tight_layout()
        return fig
