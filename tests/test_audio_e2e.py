"""The voice pipeline end to end, offline and for real: piper speaks into a virtual microphone
(a PulseAudio null sink), MicSource → VAD → STT (tiny.en) → wake word → the voice agent → TTS
into a separate speaker sink, whose output is recorded and checked."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import loom
from loom import QoS
from loom.audio import MicSource, VoicePipeline
from tests.peers.speech import silence, speech, write_wav

pytestmark = pytest.mark.slow


async def _next(sub, types, timeout):
    async with asyncio.timeout(timeout):
        while True:
            _, event = await sub.get()
            if event.type in types:
                return event


async def test_spoken_question_to_spoken_answer_through_a_virtual_microphone(tmp_path, virtual_mic):
    question = np.concatenate([silence(0.3), speech("hey loom, what is the weather in Paris"), silence(0.2)])
    wav = write_wav(tmp_path / "question.wav", question)
    threads_before = {t.ident for t in threading.enumerate()}
    async with loom.Loom(native_tools=()) as rt:
        seen = rt.bus.subscribe(
            ["vad", "transcript", "wake", "query", "voice.answer", "tts"], qos=QoS.BACKGROUND, maxsize=10_000
        )
        pipeline = VoicePipeline(rt, source=MicSource(), tts={"deterministic": True})
        await pipeline.start()
        speaker = virtual_mic.record()  # what the agent says reaches the speaker sink, not the microphone
        await asyncio.to_thread(virtual_mic.play, wav)

        final = await _next(seen, {"transcript.final"}, 20)
        heard = final.metadata["text"].lower()
        assert "weather" in heard and "paris" in heard, heard
        query = await _next(seen, {"user.query"}, 5)
        assert "weather" in query.text().lower() and "paris" in query.text().lower()
        answer = await _next(seen, {"voice.answer"}, 10)
        assert "paris" in answer.text().lower()
        done = await _next(seen, {"tts.done", "tts.error"}, 30)
        assert done.type == "tts.done", done.metadata
        await asyncio.sleep(0.3)
        said = speaker.stop()
        assert said.size and float(np.sqrt(np.mean(said.astype(np.float32) ** 2))) > 300  # audible speech
        seen.close()
        await pipeline.stop()
        assert not pipeline.running
    # Not the pipeline's: the loop's default executor (this test's to_thread) and tqdm's process-wide
    # monitor, which faster-whisper's progress bars start once per process.
    theirs = ("asyncio_", "tqdm_monitor")
    leftover = [
        t.name
        for t in threading.enumerate()
        if t.ident not in threads_before and t.is_alive() and not t.name.startswith(theirs)
    ]
    assert not leftover, leftover
