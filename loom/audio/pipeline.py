"""VoicePipeline: a source → VAD → STT → wake word → voice agent → TTS, on the runtime's bus.

Every stage is a bus participant (:mod:`loom.audio.topics`): the pipeline only builds them with
the narrow things they need (the bus, the runtime's ``spawn``, the tool registry for
``tts.speak``), starts them downstream first (so nothing the source publishes finds its next
stage missing) and stops them source first (the device is released before anything else). A
stage that fails to start stops the ones already started and the error is raised: the
pipeline is then not running. The runtime's ``stop()`` stops a pipeline still running.

The voice agent is an ordinary Loom agent (``voice``; it shows in the inspectors): it answers
each ``user.query`` with a :class:`~loom.cognitive.SimpleCognitiveLoop` when one is given,
an ``async fn(text) -> str`` when that is given, else a few rules (the time, the weather through
the ``weather.get`` tool, otherwise what it heard), publishes the answer on ``voice.answer`` and
speaks it through ``tts.speak``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from loom.audio.sources import AudioSource
from loom.audio.stage import Stage
from loom.audio.topics import USER_QUERY, AudioTopics
from loom.errors import LoomError, StopFailed, UsageError

__all__ = ["ANSWER_TOPIC", "VoiceAgent", "VoicePipeline", "rule_answer"]

log = logging.getLogger("loom.audio")
ANSWER_TOPIC = "voice.answer"
_WEATHER = re.compile(r"\bweather\b(?:.*?\b(?:in|at|for)\s+([a-z][a-z .'-]*))?", re.I)
_TIME = re.compile(r"\bwhat(?:'s| is)? the time\b|\bwhat time is it\b|\btime is it\b", re.I)


async def rule_answer(text: str, tool: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None) -> str:
    """The voice agent's answer without a model: the time, the weather (``weather.get``), or an echo."""
    if _TIME.search(text):
        return time.strftime("It is %H:%M.")
    m = _WEATHER.search(text)
    if m:
        place = (m.group(1) or "").strip(" .?!").title()
        if not place:
            return "Which place would you like the weather for?"
        if tool is not None:
            try:
                out = await tool("weather.get", {"location": place})
            except (LoomError, OSError) as exc:
                log.info("weather.get failed for %s: %s", place, exc)
            else:
                return _weather_sentence(place, out)
        return f"I cannot check the weather in {place} right now."
    return f"You said: {text.strip()}"


def _weather_sentence(place: str, out: Any) -> str:
    if isinstance(out, Mapping):
        temp = out.get("temperature_c", out.get("temperature"))
        cond = out.get("conditions") or out.get("description") or ""
        if temp is not None:
            return f"In {place} it is {temp} degrees{', ' + str(cond) if cond else ''}."
    return f"The weather in {place}: {out}."


class VoiceAgent:
    """The handler of the voice agent: ``Agent("voice", topics=[query], on_event=VoiceAgent(...))``.

    Args:
        think: a :class:`~loom.cognitive.SimpleCognitiveLoop` (its answer's text is spoken), or an
            ``async fn(text) -> str``; ``None``: :func:`rule_answer`.
        speak: say the answer through the tool ``tts.speak`` (else only publish it).
    """

    def __init__(self, think: Any = None, *, speak: bool = True, answer_topic: str = ANSWER_TOPIC) -> None:
        if think is not None and not callable(getattr(think, "run", None)) and not callable(think):
            raise UsageError(f"think must be a SimpleCognitiveLoop or an async fn(text) -> str, got {think!r}")
        self.think = think
        self.speak = speak
        self.answer_topic = answer_topic
        self.answered = 0
        self.failed = 0
        self.last: dict[str, str] = {}

    async def __call__(self, ctx: Any, topic: str, event: Any) -> None:
        if event.type != USER_QUERY:
            return
        text = event.metadata.get("text") or event.text()
        session = event.metadata.get("session_id", "")
        try:
            answer = await self._answer(ctx, text)
        except Exception as exc:  # noqa: BLE001 - a failed answer is said, not raised into the agent
            self.failed += 1
            log.warning("voice agent could not answer %r: %s", text, exc)
            answer = "Sorry, something went wrong."
        self.answered += 1
        self.last = {"query": text, "answer": answer, "session_id": session}
        md = {"query": text, "session_id": session}
        await ctx.emit(self.answer_topic, answer, type="voice.answer", metadata=md)
        if self.speak:
            try:
                await ctx.tool("tts.speak", {"text": answer})
            except LoomError as exc:  # no speaker, or it failed: the answer was still published
                log.info("voice agent could not speak: %s", exc)

    async def _answer(self, ctx: Any, text: str) -> str:
        think = self.think
        if think is None:
            return await rule_answer(text, lambda name, args: ctx.tool(name, args, timeout_ms=5000))
        if callable(getattr(think, "run", None)):
            answer = await think.run(text)
            return answer.text if answer.ok else f"Sorry, I could not answer that ({answer.stop_reason})."
        return str(await think(text))


class _StopWith:
    """What the runtime closes at its stop: the pipeline (if the user did not stop it before)."""

    def __init__(self, pipeline: VoicePipeline) -> None:
        self.name = "voice"
        self._pipeline = pipeline

    async def aclose(self) -> None:
        await self._pipeline.stop()


class VoicePipeline:
    """The voice stages on ``rt.bus``.

    Args:
        rt: the running :class:`~loom.Loom`.
        source: a :class:`~loom.audio.MicSource` or :class:`~loom.audio.WavSource`.
        vad, stt, wake, tts: options of each stage (dicts), or ``False`` to leave it out.
        agent: ``False`` for no voice agent; else what :class:`VoiceAgent` takes as ``think``
            (``None``: the rules), or a :class:`VoiceAgent`.
        topics: the pipeline's topics (:class:`AudioTopics`).
    """

    def __init__(
        self,
        rt: Any,
        *,
        source: AudioSource,
        vad: Mapping[str, Any] | bool = True,
        stt: Mapping[str, Any] | bool = True,
        wake: Mapping[str, Any] | bool = True,
        tts: Mapping[str, Any] | bool = True,
        agent: Any = None,
        topics: AudioTopics | None = None,
    ) -> None:
        if not isinstance(source, AudioSource):
            raise UsageError(f"source must be a MicSource or a WavSource, got {source!r}")
        self.rt = rt
        self.topics = topics or AudioTopics()
        self.source = source
        self.stages: dict[str, Stage] = {}
        self._options = {"vad": vad, "stt": stt, "wake": wake, "tts": tts}
        self.voice_agent: VoiceAgent | None = None
        if agent is not False:
            self.voice_agent = agent if isinstance(agent, VoiceAgent) else VoiceAgent(agent, speak=tts is not False)
        self.agent: Any = None
        self.running = False
        self._closer: _StopWith | None = None

    def _build(self) -> dict[str, Stage]:
        from loom.audio.stt import SttEngine
        from loom.audio.tts import TtsSpeaker
        from loom.audio.vad import VadGate
        from loom.audio.wake import WakeWord

        rt, topics = self.rt, self.topics
        kinds: dict[str, Callable[..., Stage]] = {
            "tts": lambda **o: TtsSpeaker(rt.bus, spawn=rt.spawn, topics=topics, tools=rt.tools, **o),
            "stt": lambda **o: SttEngine(rt.bus, spawn=rt.spawn, topics=topics, **o),
            "wake": lambda **o: WakeWord(rt.bus, spawn=rt.spawn, topics=topics, **o),
            "vad": lambda **o: VadGate(rt.bus, spawn=rt.spawn, topics=topics, **o),
        }
        stages: dict[str, Stage] = {}
        for name, make in kinds.items():  # downstream first: the order they start in
            options = self._options[name]
            if options is False:
                continue
            stages[name] = make(**(dict(options) if isinstance(options, Mapping) else {}))
        return stages

    async def start(self) -> VoicePipeline:
        """Start every stage (models load, the device opens last); returns the pipeline.

        Raises:
            UsageError: no input device, a missing model path, a bad WAV, ...: nothing is left running.
        """
        if self.running:
            return self
        if not getattr(self.rt, "running", False):
            raise UsageError("the runtime is not running: `await rt.start()` (or %loom start) first")
        from loom.sdk import Agent

        self.rt.instruments.untraced.update((self.topics.mic, self.topics.voiced))  # audio frames: no spans
        self.stages = self._build()
        started: list[Any] = []
        try:
            for stage in self.stages.values():
                await stage.start()
                started.append(stage)
            if self.voice_agent is not None:
                self.agent = Agent("voice", topics=[self.topics.query], on_event=self.voice_agent, runtime=self.rt)
                await self.agent.start()
            self.source.attach(self.rt.bus, spawn=self.rt.spawn, topics=self.topics)
            await self.source.start()
        except BaseException:
            if self.agent is not None:
                await self.agent.stop()
                self.agent = None
            for stage in reversed(started):
                await stage.stop()
            raise
        self.running = True
        if self._closer is None:
            self._closer = await self.rt.add_component(_StopWith(self), name="voice")
        return self

    async def stop(self) -> None:
        """Stop the source (the device is free again), then the stages and the agent; idempotent."""
        if not self.running:
            return
        self.running = False
        parts: list[Any] = [self.source, *(self.stages[n] for n in ("vad", "stt", "wake") if n in self.stages)]
        parts += [self.agent] if self.agent is not None else []
        parts += [self.stages["tts"]] if "tts" in self.stages else []
        self.agent = None
        errors: list[Exception] = []
        for part in parts:  # each one stops even when one before it failed to
            try:
                await part.stop()
            except Exception as exc:  # noqa: BLE001 - collected, raised together below
                log.error("stopping %r failed", part, exc_info=exc)
                errors.append(exc)
        if errors:
            raise StopFailed(f"the voice pipeline stopped, but {len(errors)} part(s) failed to", errors)

    def __getitem__(self, name: str) -> Stage:
        """A stage by name: ``source``, ``vad``, ``stt``, ``wake``, ``tts``."""
        return self.source if name == "source" else self.stages[name]

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<VoicePipeline {state} {self.source!r} stages={list(self.stages)}>"
