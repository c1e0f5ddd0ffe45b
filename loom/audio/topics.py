"""The audio stages' topics, event types and metadata: the contract every stage keeps.

Topics and types follow upstream Loom's audio stack (docs/audio.md); every topic is configurable
through :class:`AudioTopics`. Audio travels as PCM signed 16-bit little-endian (``pcm_s16le``).

============================  =====================  ==========================================
topic (default)               event type             payload / metadata
============================  =====================  ==========================================
``audio.mic``                 ``audio_chunk``        PCM; ``sample_rate``, ``channels``,
                                                     ``encoding``, ``frame_samples``, ``device``,
                                                     ``seq`` (priority 90)
``vad``                       ``vad.speech_start``   empty; ``utterance_id``, ``sample_rate``,
                                                     ``frame_ms``, ``engine`` (priority 70)
``audio.voiced``              ``audio_voiced``       one mono frame of PCM; ``utterance_id``,
                                                     ``sample_rate``, ``channels``, ``encoding``,
                                                     ``frame_ms`` (priority 80)
``vad``                       ``vad.speech_end``     empty; ``utterance_id``, ``duration_ms``
``transcript``                ``transcript.partial`` text; ``utterance_id``, ``text``,
                                                     ``duration_ms`` (so far)
``transcript``                ``transcript.final``   text; ``utterance_id``, ``text``,
                                                     ``duration_ms``, ``language``,
                                                     ``latency_ms`` (end of speech → text)
``transcript``                ``stt.error``          error message; ``utterance_id``, ``error``
``wake``                      ``wake_word_detected`` empty; ``phrase``, ``text``, ``session_id``
``query``                     ``user.query``         text; ``text``, ``session_id``
``tts``                       ``tts.start``          text; ``engine``, ``voice``, ``sample_rate``
``tts``                       ``tts.done``           text; + ``synthesis_ms``, ``playback_ms``,
                                                     ``wav_path``, ``interrupted``
``tts``                       ``tts.error``          text; ``error``
============================  =====================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass

from loom.events.topics import validate_topic

__all__ = [
    "AUDIO_CHUNK",
    "AUDIO_VOICED",
    "ENCODING",
    "SAMPLE_RATE",
    "SPEECH_END",
    "SPEECH_START",
    "STT_ERROR",
    "TRANSCRIPT_FINAL",
    "TRANSCRIPT_PARTIAL",
    "TTS_DONE",
    "TTS_ERROR",
    "TTS_START",
    "USER_QUERY",
    "WAKE_DETECTED",
    "AudioTopics",
]

SAMPLE_RATE = 16_000  # what the VAD and Whisper want: sources resample to it
ENCODING = "pcm_s16le"

AUDIO_CHUNK = "audio_chunk"
SPEECH_START = "vad.speech_start"
AUDIO_VOICED = "audio_voiced"
SPEECH_END = "vad.speech_end"
TRANSCRIPT_PARTIAL = "transcript.partial"
TRANSCRIPT_FINAL = "transcript.final"
STT_ERROR = "stt.error"
WAKE_DETECTED = "wake_word_detected"
USER_QUERY = "user.query"
TTS_START = "tts.start"
TTS_DONE = "tts.done"
TTS_ERROR = "tts.error"


@dataclass(frozen=True, slots=True)
class AudioTopics:
    """Where each stage publishes (and so where the next one listens)."""

    mic: str = "audio.mic"
    vad: str = "vad"
    voiced: str = "audio.voiced"
    transcript: str = "transcript"
    wake: str = "wake"
    query: str = "query"
    tts: str = "tts"

    def __post_init__(self) -> None:
        for name in ("mic", "vad", "voiced", "transcript", "wake", "query", "tts"):
            validate_topic(getattr(self, name))
