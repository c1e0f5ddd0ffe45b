"""Playback for text-to-speech: PCM to a sound device, or to a WAV file when there is none.

The device side is sounddevice (PortAudio) with blocking-mode writes from a thread the caller
owns, not a PortAudio callback: the writer writes only what fits in the device buffer and
otherwise waits on its stop flag (5 ms at most), so an interruption (barge-in, timeout,
``stop()``) takes effect within milliseconds however slowly the device drains, and ``abort()``
drops what is still buffered. A callback stream would make PortAudio's thread call into
Python, which leaves a ``_DummyThread`` behind in ``threading.enumerate()``.
The stream is opened per utterance and closed after it, so the device is free between
utterances and nothing is left open when the speaker stops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.audio.pcm import resample
from loom.errors import UsageError

__all__ = ["BLOCK_MS", "NoOutputDevice", "OutputDevice", "PlayResult", "find_output", "play", "write_wav"]

log = logging.getLogger("loom.audio")
BLOCK_MS = 20  # the device block; chunks of synthesis are awaited this long between stop checks


class NoOutputDevice(UsageError):
    """No sound output: PortAudio is missing, it lists no output device, or the one asked for is absent."""


@dataclass(frozen=True, slots=True)
class OutputDevice:
    """The output device a speaker plays on, and how (rate and channels it accepts)."""

    index: int
    name: str
    rate: int  # what the stream is opened at; the PCM is resampled to it when it differs
    channels: int  # 1, or 2 for a device that refuses mono (the samples are duplicated)


@dataclass(frozen=True, slots=True)
class PlayResult:
    played_ms: float  # first write → the stream stopped (drained, or aborted)
    first_audio_at: float | None  # perf_counter() of the first write (None: nothing was played)
    stopped_at: float  # perf_counter() when the stream had stopped
    interrupted: bool


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice loads libportaudio at import; Linux wheels do not bundle it
        raise NoOutputDevice(f"PortAudio is not available ({exc}); install libportaudio2") from None
    except ImportError:
        raise NoOutputDevice("sounddevice is not installed: pip install 'loom-notebook[audio]'") from None
    return sd


def find_output(device: int | str | None, rate: int) -> OutputDevice:
    """The output device by index, by (part of its) name, or the default one when ``device`` is None.

    ``rate`` is the rate the speech comes at: kept when the device accepts it, otherwise the
    device's default rate is used (and the speaker resamples).

    Raises:
        NoOutputDevice: no PortAudio, no output device at all, or none matching ``device``.
    """
    sd = _sounddevice()
    try:
        info = sd.query_devices(device, kind="output") if device is not None else sd.query_devices(kind="output")
    except (ValueError, sd.PortAudioError) as exc:
        what = "no default output device" if device is None else f"no output device {device!r}"
        raise NoOutputDevice(f"{what} ({exc})") from None
    if not info or info.get("max_output_channels", 0) < 1:
        raise NoOutputDevice(f"{info.get('name') if info else device!r} is not an output device")
    index = int(info["index"])
    channels = 1
    try:
        sd.check_output_settings(device=index, samplerate=rate, channels=1, dtype="int16")
    except (ValueError, sd.PortAudioError):
        # The device refuses the speech's rate or mono: try its own rate, then stereo at that rate.
        rate = int(info["default_samplerate"])
        try:
            sd.check_output_settings(device=index, samplerate=rate, channels=1, dtype="int16")
        except (ValueError, sd.PortAudioError):
            channels = 2
    return OutputDevice(index=index, name=str(info["name"]), rate=rate, channels=channels)


def play(
    device: OutputDevice,
    src_rate: int,
    chunks: queue.Queue[Any],
    stop: threading.Event,
    on_first_audio: Any = None,
) -> PlayResult:
    """Play int16 mono arrays from ``chunks`` (``None`` ends the utterance) until done or ``stop`` is set.

    Runs in the caller's thread and blocks: the speaker runs it in its playback thread. The stream
    is opened here and always closed before returning. ``on_first_audio()`` is called (in this
    thread) just before the first samples are written.
    """
    sd = _sounddevice()
    import numpy as np

    block = max(1, device.rate * BLOCK_MS // 1000)
    stream = sd.OutputStream(
        device=device.index, samplerate=device.rate, channels=device.channels, dtype="int16", blocksize=block
    )
    first: float | None = None
    try:
        done = False
        while not done and not stop.is_set():
            try:
                item = chunks.get(timeout=BLOCK_MS / 1000)  # short: a stop while waiting for synthesis counts too
            except queue.Empty:
                continue
            if item is None:
                done = True
                break
            samples = resample(item, src_rate, device.rate) if src_rate != device.rate else item
            if device.channels == 2:
                samples = np.repeat(samples.reshape(-1, 1), 2, axis=1)
            if first is None:
                if on_first_audio is not None:
                    on_first_audio()
                stream.start()
                first = time.perf_counter()
            _write(stream, samples, block, stop)
        interrupted = not done
        if stream.active and not interrupted:
            # Through ALSA's pulse plugin, stop() returned before the last ~60 ms were heard: a
            # stream latency's worth of silence after the speech pushes the whole tail out first.
            n = (int(stream.latency * device.rate) // block + 2) * block
            interrupted = not _write(stream, np.zeros((n, 2) if device.channels == 2 else n, np.int16), block, stop)
        if stream.active:
            # abort drops what the device still buffers (an interruption must be silent at once)
            if interrupted:
                stream.abort()
            else:
                stream.stop()
        stopped = time.perf_counter()
    finally:
        stream.close()
    return PlayResult(
        played_ms=(stopped - first) * 1000 if first is not None else 0.0,
        first_audio_at=first,
        stopped_at=stopped,
        interrupted=interrupted,
    )


def _write(stream: Any, samples: Any, block: int, stop: threading.Event) -> bool:
    """Write all of ``samples`` unless ``stop`` is set first (then False), never blocking for long.

    A blocking write waits for room as long as the device takes: a PulseAudio null sink that
    renders in 2 s blocks held it for 400 ms. So: write only what fits, otherwise wait on the flag.
    """
    i = 0
    while i < len(samples):
        if stop.is_set():
            return False
        room = stream.write_available
        if room < min(block, len(samples) - i):
            stop.wait(0.005)
            continue
        stream.write(samples[i : i + room])
        i += room
    return True


def write_wav(path: str | Path, samples: Any, rate: int) -> Path:
    """Write int16 mono samples as a 16-bit PCM WAV file; returns the path."""
    import numpy as np

    data = np.asarray(samples, dtype=np.int16)
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(int(rate))
        wf.writeframes(data.astype("<i2").tobytes())
    return Path(path)
