"""PCM helpers: mono 16-bit samples at the pipeline's rate, from whatever a device or file gives.

numpy only (the ``audio`` extra brings it with faster-whisper). Resampling is band-limited
linear interpolation: a windowed-sinc low-pass before decimating, then ``np.interp``; for
speech at 16 kHz from 22.05/44.1/48 kHz that is transparent to a VAD and to Whisper, and it
costs about 1 % of a core in real time.
"""

from __future__ import annotations

from typing import Any

from loom.errors import UsageError

__all__ = ["float_to_s16", "read_wav", "resample", "s16_to_float", "to_mono"]


def _np() -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - the audio extra brings numpy
        raise UsageError("audio needs the 'audio' extra: pip install 'loom-notebook[audio]'") from None
    return np


def to_mono(samples: Any, channels: int) -> Any:
    """Interleaved int16 samples of ``channels`` channels → mono int16 (the channels averaged)."""
    np = _np()
    data = np.asarray(samples, dtype=np.int16)
    if channels == 1:
        return data
    if channels < 1 or data.size % channels:
        raise UsageError(f"{data.size} samples do not split into {channels} channels")
    return data.reshape(-1, channels).astype(np.int32).mean(axis=1).round().astype(np.int16)


def float_to_s16(samples: Any) -> Any:
    """float32 samples in [-1, 1] → int16 (clipped)."""
    np = _np()
    return (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)


def s16_to_float(samples: Any) -> Any:
    """int16 samples (array or PCM bytes) → float32 in [-1, 1) (what Whisper and Silero take)."""
    np = _np()
    data = np.frombuffer(samples, dtype=np.int16) if isinstance(samples, bytes | bytearray | memoryview) else samples
    return np.asarray(data, dtype=np.float32) / 32768.0


def resample(samples: Any, src_rate: int, dst_rate: int) -> Any:
    """int16 mono samples from ``src_rate`` to ``dst_rate`` Hz (int16 out)."""
    np = _np()
    data = np.asarray(samples, dtype=np.int16)
    if src_rate == dst_rate or data.size == 0:
        return data
    if src_rate <= 0 or dst_rate <= 0:
        raise UsageError(f"sample rates must be positive, got {src_rate} and {dst_rate}")
    x = data.astype(np.float32)
    if dst_rate < src_rate:  # low-pass at the new Nyquist frequency first, or the highs fold back as noise
        cutoff = dst_rate / src_rate / 2
        taps = np.arange(-32, 33, dtype=np.float32)
        kernel = np.sinc(2 * cutoff * taps) * np.hamming(taps.size).astype(np.float32)
        x = np.convolve(x, kernel / kernel.sum(), mode="same")
    n_out = int(round(data.size * dst_rate / src_rate))
    t_out = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    y = np.interp(t_out, np.arange(data.size, dtype=np.float64), x)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def read_wav(path: str) -> tuple[Any, int]:
    """A WAV file's samples as mono int16 and its sample rate.

    Raises:
        UsageError: not a readable WAV, or not 16-bit PCM (naming the file and what it is).
    """
    import wave

    np = _np()
    try:
        with wave.open(str(path), "rb") as wf:
            width, channels, rate, n = wf.getsampwidth(), wf.getnchannels(), wf.getframerate(), wf.getnframes()
            if wf.getcomptype() != "NONE":
                raise UsageError(f"{path}: compressed WAV ({wf.getcompname()}); 16-bit PCM is needed")
            frames = wf.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise UsageError(f"{path}: not a readable WAV file ({exc})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if width != 2:
        raise UsageError(f"{path}: {8 * width}-bit samples; 16-bit PCM is needed")
    if channels < 1 or rate <= 0:
        raise UsageError(f"{path}: {channels} channels at {rate} Hz is not audio")
    usable = len(frames) - len(frames) % (2 * channels)  # a file cut mid-frame keeps its whole frames
    return to_mono(np.frombuffer(frames[:usable], dtype="<i2"), channels), rate
