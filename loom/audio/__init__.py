"""Audio: microphone, voice activity detection, speech-to-text, wake word and text-to-speech as
bus participants, and the voice pipeline that wires them (extra ``audio``; docs/audio.md).

    from loom.audio import VoicePipeline, WavSource, MicSource
    pipeline = VoicePipeline(rt, source=WavSource("hello.wav", realtime=False))
    await pipeline.start()      # the stages publish on rt.bus
    await pipeline.stop()       # devices, threads and models released

Nothing here imports numpy, sounddevice, faster-whisper or piper until a stage starts.
"""

from __future__ import annotations

from loom.audio.pipeline import VoiceAgent, VoicePipeline
from loom.audio.sources import MicSource, WavSource, input_devices
from loom.audio.stage import Stage
from loom.audio.stt import SttEngine
from loom.audio.topics import AudioTopics
from loom.audio.tts import TtsSpeaker
from loom.audio.vad import VadGate
from loom.audio.wake import WakeWord

__all__ = [
    "AudioTopics",
    "MicSource",
    "Stage",
    "SttEngine",
    "TtsSpeaker",
    "VadGate",
    "VoiceAgent",
    "VoicePipeline",
    "WakeWord",
    "WavSource",
    "input_devices",
]
