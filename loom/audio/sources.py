"""Audio sources: ``audio_chunk`` events on ``audio.mic`` from a microphone or a WAV file.

Both publish 16 kHz mono 16-bit chunks of ``chunk_ms`` (20 ms: 640 bytes) with the contract's
metadata (:mod:`loom.audio.topics`), converting what the device or file gives.

**MicSource** (sounddevice / PortAudio). PortAudio calls back on its own thread; that thread
only appends the block to a bounded deque and, when the deque was empty, asks the loop to drain
it (``call_soon_threadsafe``): it never touches the bus, never waits, and a full deque drops the
block, counted (``stats["dropped_blocks"]``), rather than stall the device. The loop side
converts (mono, resampling when the device cannot record at 16 kHz) and publishes with
``publish_nowait``. ``stop()`` aborts and closes the stream: the device is free again.

**WavSource** reads a 16-bit PCM WAV (any rate, any channel count) and publishes it paced in real
time (``realtime=True``) or as fast as the subscribers take it, then ``tail_silence_ms`` of
silence so a last utterance ends; ``await source.finished`` waits for the end of the file.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom.audio.pcm import read_wav, resample, to_mono
from loom.audio.stage import Spawn, Stage
from loom.audio.topics import AUDIO_CHUNK, ENCODING, SAMPLE_RATE, AudioTopics
from loom.errors import UsageError
from loom.events.event import Event

if TYPE_CHECKING:
    from loom.events.bus import EventBus

__all__ = ["AudioSource", "MicSource", "WavSource", "input_devices"]

log = logging.getLogger("loom.audio")


class AudioSource(Stage):
    """A stage with nothing upstream: made on its own, attached to a bus by the pipeline."""

    def __init__(self, *, chunk_ms: int = 20, source: str = "mic.primary") -> None:
        if chunk_ms.__class__ is not int or not 10 <= chunk_ms <= 200:
            raise UsageError(f"chunk_ms must be an int within 10..200, got {chunk_ms!r}")
        self.chunk_ms = chunk_ms
        self.chunk_samples = SAMPLE_RATE * chunk_ms // 1000
        self.source = source
        self.device_label = ""
        self.level = 0.0  # RMS of the last chunk, 0..1 (the notebook's input meter)
        self._seq = 0
        self._bound = False
        self.stats: dict[str, int] = {}
        self.running = False
        self._tasks: list[asyncio.Task[Any]] = []

    def attach(self, bus: EventBus, *, spawn: Spawn, topics: AudioTopics | None = None) -> None:
        """Publish on ``bus`` (the pipeline calls this before :meth:`start`)."""
        Stage.__init__(self, bus, spawn=spawn, topics=topics)
        self._bound = True

    async def start(self) -> None:
        if not self._bound:
            raise UsageError(f"{type(self).__name__} is not attached to a bus: give it to a VoicePipeline")
        await super().start()

    def _publish(self, samples: Any) -> None:
        """Publish 16 kHz mono int16 ``samples`` (exactly one chunk)."""
        import numpy as np

        self._seq += 1
        self.level = float(np.sqrt(np.mean(np.square(samples.astype(np.float32))))) / 32768.0 if samples.size else 0.0
        md = {
            "sample_rate": str(SAMPLE_RATE),
            "channels": "1",
            "encoding": ENCODING,
            "frame_samples": str(samples.size),
            "device": self.device_label,
            "seq": str(self._seq),
        }
        event = Event(AUDIO_CHUNK, samples.astype("<i2").tobytes(), source=self.source, metadata=md, priority=90)
        self.bus.publish_nowait(self.topics.mic, event)
        self.count("chunks")


def input_devices() -> list[dict[str, Any]]:
    """The input devices PortAudio sees (``[]`` when there is none, or no PortAudio at all)."""
    try:
        import sounddevice as sd
    except (ImportError, OSError):
        return []
    return [
        {"index": i, "name": d["name"], "channels": d["max_input_channels"], "default_rate": d["default_samplerate"]}
        for i, d in enumerate(sd.query_devices())
        if d["max_input_channels"] > 0
    ]


class MicSource(AudioSource):
    """The microphone: ``device`` by index or by a part of its name (default: the default input).

    Raises (at start):
        UsageError: no PortAudio, no input device, or no device matching ``device`` (the
            message lists the devices there are); the pipeline is then not started.
    """

    name = "audio.mic"

    def __init__(self, device: int | str | None = None, *, chunk_ms: int = 20, queue_blocks: int = 100) -> None:
        super().__init__(chunk_ms=chunk_ms, source="mic.primary")
        self.device = device
        self.queue_blocks = queue_blocks
        self.rate = SAMPLE_RATE  # what the device records at (resampled to 16 kHz when different)
        self.channels = 1
        self._blocks: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()  # the deque and whether a drain is scheduled, between the two threads
        self._scheduled = False
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: Any = None  # samples left over after the last whole chunk

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pending = None
        # PortAudio scans devices when first imported and may take tens of ms to open one: all of
        # it in a thread, never on the loop
        self._stream = await asyncio.to_thread(self._open)

    def _open(self) -> Any:
        try:
            import sounddevice as sd
        except OSError as exc:
            raise UsageError(f"no PortAudio library ({exc}): on Debian, apt-get install libportaudio2") from None
        index, info = self._pick(sd)
        self.device_label = f"{index}:{info['name']}"
        self.channels = 1
        try:
            sd.check_input_settings(device=index, samplerate=SAMPLE_RATE, channels=1, dtype="int16")
            self.rate = SAMPLE_RATE
        except Exception:  # noqa: BLE001 - PortAudio says this device cannot: record at its own rate, resample
            self.rate = int(info["default_samplerate"])
        try:
            stream = sd.RawInputStream(
                device=index,
                samplerate=self.rate,
                channels=self.channels,
                dtype="int16",
                blocksize=self.rate * self.chunk_ms // 1000,
                callback=self._callback,
            )
        except Exception as exc:  # noqa: BLE001 - PortAudio's errors name the device problem
            raise UsageError(f"cannot open input device {self.device_label!r}: {exc}") from None
        try:
            stream.start()
        except Exception as exc:  # noqa: BLE001
            stream.close()  # a stream that cannot start must not keep the device
            raise UsageError(f"cannot start input device {self.device_label!r}: {exc}") from None
        return stream

    def _pick(self, sd: Any) -> tuple[int, Any]:
        devices = input_devices()
        if not devices:
            raise UsageError("no audio input device (PortAudio lists none): use WavSource or `%loom mic --wav FILE`")
        names = ", ".join(f"{d['index']}: {d['name']}" for d in devices)
        wanted = self.device
        if wanted is None:
            default = sd.default.device[0]
            chosen = next((d for d in devices if d["index"] == default), devices[0])
        elif isinstance(wanted, int):
            chosen = next((d for d in devices if d["index"] == wanted), None)
        else:
            chosen = next((d for d in devices if str(wanted).lower() in d["name"].lower()), None)
        if chosen is None:
            raise UsageError(f"no input device {wanted!r}; input devices: {names}")
        return chosen["index"], sd.query_devices(chosen["index"])

    def _callback(self, indata: Any, frames: int, when: Any, status: Any) -> None:
        # PortAudio's thread: copy, queue, wake the loop; never wait, never touch the bus.
        if status:
            self.count("device_status")
        data = bytes(indata)
        with self._lock:  # one drain scheduled at a time, and never none while blocks wait
            if len(self._blocks) >= self.queue_blocks:
                self.count("dropped_blocks")
                return
            self._blocks.append(data)
            if self._scheduled or self._loop is None:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed under a stream being torn down
            pass

    def _drain(self) -> None:
        import numpy as np

        with self._lock:
            taken = list(self._blocks)
            self._blocks.clear()
            self._scheduled = False
        if not self.running:
            return
        for block in taken:
            data = np.frombuffer(block, dtype="<i2")
            mono = to_mono(data, self.channels)
            samples = resample(mono, self.rate, SAMPLE_RATE) if self.rate != SAMPLE_RATE else mono
            if self._pending is not None and self._pending.size:
                samples = np.concatenate([self._pending, samples])
            n = self.chunk_samples
            whole = samples.size - samples.size % n
            for i in range(0, whole, n):
                self._publish(samples[i : i + n])
            self._pending = samples[whole:]

    async def _stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:

            def close() -> None:  # PortAudio's teardown can take a while: not on the loop
                try:
                    stream.abort()  # at once, not after the buffered blocks
                finally:
                    stream.close()

            await asyncio.to_thread(close)
        with self._lock:
            self._blocks.clear()
            self._scheduled = False


class WavSource(AudioSource):
    """A 16-bit PCM WAV file as if it were the microphone.

    Raises (at start):
        UsageError: the file is missing, not a WAV, compressed, or not 16-bit.
    """

    name = "audio.wav"

    def __init__(
        self,
        path: str | Path,
        *,
        realtime: bool = True,
        chunk_ms: int = 20,
        tail_silence_ms: int = 1000,
    ) -> None:
        super().__init__(chunk_ms=chunk_ms, source=f"wav.{Path(path).stem or 'file'}")
        self.path = Path(path)
        self.realtime = realtime
        self.tail_silence_ms = tail_silence_ms
        self.device_label = f"wav:{self.path.name}"
        self.finished: asyncio.Future[int] | None = None

    async def _start(self) -> None:
        import numpy as np

        samples, rate = read_wav(str(self.path))
        samples = resample(samples, rate, SAMPLE_RATE)
        tail = np.zeros(SAMPLE_RATE * self.tail_silence_ms // 1000, dtype=np.int16)
        self.finished = asyncio.get_running_loop().create_future()
        self.task(self._play(np.concatenate([samples, tail])), "play")

    async def _play(self, samples: Any) -> None:
        n = self.chunk_samples
        count = -(-samples.size // n)
        start = time.monotonic()
        try:
            for k in range(count):
                chunk = samples[k * n : (k + 1) * n]
                if chunk.size < n:  # the last one padded: every chunk has the same length
                    import numpy as np

                    chunk = np.concatenate([chunk, np.zeros(n - chunk.size, dtype=np.int16)])
                if self.realtime:
                    delay = start + k * self.chunk_ms / 1000 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                self._publish(chunk)
                if not self.realtime:
                    await asyncio.sleep(0)  # let the stages take each chunk: REALTIME queues would drop a burst
        finally:
            if self.finished is not None and not self.finished.done():
                self.finished.set_result(self.stats.get("chunks", 0))
