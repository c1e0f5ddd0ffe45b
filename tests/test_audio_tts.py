"""TtsSpeaker for real: piper and espeak-ng synthesis, WAV output, the tts.speak tool, playback on a
PulseAudio null sink (tests/peers/virtual_audio.py), barge-in, stop, and the faults."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import loom
from loom.audio import TtsSpeaker
from loom.audio.pcm import read_wav
from loom.audio.playback import NoOutputDevice, find_output, play
from loom.audio.topics import SPEECH_START, TTS_DONE, TTS_ERROR, TTS_START
from loom.errors import ToolError, UsageError
from tests.conftest import drain, until
from tests.peers.virtual_audio import refresh_portaudio

pytest.importorskip("piper")

TEXT = "Hello loom, what is the weather in Paris?"
LONG = (
    "This is a long answer, which the user will not let me finish. "
    "It goes on about the weather in Paris, the clouds over the river, and the wind from the west. "
    "Then it talks about tomorrow, and the day after that, and the whole week ahead."
)


@pytest.fixture
async def make(rt):
    """make(**options) → a started TtsSpeaker on rt's bus; every one is stopped after the test."""
    made: list[TtsSpeaker] = []

    async def _make(**options) -> TtsSpeaker:
        options.setdefault("deterministic", True)
        speaker = TtsSpeaker(rt.bus, spawn=rt.spawn, **options)
        made.append(speaker)
        await speaker.start()
        return speaker

    yield _make
    for speaker in made:
        await speaker.stop()


def wav_info(path: str) -> tuple[int, int, int, float]:
    with wave.open(path, "rb") as wf:
        return wf.getsampwidth(), wf.getnchannels(), wf.getframerate(), wf.getnframes() / wf.getframerate()


def file_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def types_of(deliveries) -> list[str]:
    return [d.event.type for d in deliveries]


def loom_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("loom-tts")]


# -- synthesis to WAV ---------------------------------------------------------------------
async def test_speaks_into_a_valid_wav_deterministically_with_events_in_order(rt, make, tmp_path):
    events = rt.bus.subscribe("tts")
    speaker = await make(output="wav", wav_dir=tmp_path)
    assert (speaker.engine, speaker.voice, speaker.sample_rate, speaker.device) == (
        "piper",
        "en_US-joe-medium",
        22050,
        None,
    )
    first = await speaker.speak(TEXT)
    second = await speaker.speak(TEXT)
    assert first["engine"] == "piper" and first["interrupted"] is False and first["playback_ms"] == 0.0
    assert first["wav_path"].startswith(str(tmp_path)) and first["wav_path"] != second["wav_path"]
    width, channels, rate, seconds = wav_info(first["wav_path"])
    assert (width, channels, rate) == (2, 1, 22050)
    assert 1.5 < seconds < 4.5, seconds  # about 2.5 s of speech
    samples, _ = read_wav(first["wav_path"])
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 500  # speech, not silence
    assert file_bytes(first["wav_path"]) == file_bytes(second["wav_path"])  # noise 0: byte-identical
    assert 0 < first["first_audio_ms"] <= first["synthesis_ms"]
    got = await drain(events)
    assert types_of(got) == [TTS_START, TTS_DONE, TTS_START, TTS_DONE]
    start, done = got[0].event, got[1].event
    assert start.payload.decode() == TEXT and start.metadata["engine"] == "piper"
    assert start.metadata["sample_rate"] == "22050" and start.metadata["output"] == "wav"
    assert done.metadata["interrupted"] == "false" and done.metadata["wav_path"] == first["wav_path"]
    assert float(done.metadata["synthesis_ms"]) == first["synthesis_ms"]
    events.close()


async def test_rate_and_volume_change_the_speech(make, tmp_path):
    speaker = await make(output="wav", wav_dir=tmp_path)
    normal = await speaker.speak(TEXT)
    fast = await speaker.speak(TEXT, rate=2.0, volume=0.5)
    assert wav_info(fast["wav_path"])[3] < 0.7 * wav_info(normal["wav_path"])[3]
    loud, quiet = read_wav(normal["wav_path"])[0], read_wav(fast["wav_path"])[0]
    assert np.abs(quiet).max() < 0.6 * np.abs(loud).max()


async def test_empty_text_is_ok_and_plays_nothing(rt, make, tmp_path):
    events = rt.bus.subscribe("tts")
    speaker = await make(output="wav", wav_dir=tmp_path)
    for text in ("", "   \n"):
        result = await speaker.speak(text)
        assert result["wav_path"] is None and result["interrupted"] is False and result["synthesis_ms"] == 0.0
    assert await drain(events) == [] and list(tmp_path.iterdir()) == []
    events.close()


async def test_one_utterance_at_a_time_in_order(rt, make, tmp_path):
    events = rt.bus.subscribe("tts")
    speaker = await make(output="wav", wav_dir=tmp_path)
    a, b = await asyncio.gather(speaker.speak("First sentence."), speaker.speak("Second sentence."))
    got = [(d.event.type, d.event.payload.decode()) for d in await drain(events)]
    assert got == [
        (TTS_START, "First sentence."),
        (TTS_DONE, "First sentence."),
        (TTS_START, "Second sentence."),
        (TTS_DONE, "Second sentence."),
    ]
    assert not a["interrupted"] and not b["interrupted"]
    events.close()


async def test_barge_in_during_synthesis_and_barge_in_off(rt, make, tmp_path):
    events = rt.bus.subscribe("tts")
    speaker = await make(output="wav", wav_dir=tmp_path)
    speaking = asyncio.create_task(speaker.speak(LONG))
    assert (await asyncio.wait_for(events.get(), 5)).event.type == TTS_START  # synthesis under way
    rt.bus.publish_nowait("vad", loom.Event(SPEECH_START))
    result = await asyncio.wait_for(speaking, 2.0)  # not after the whole text is synthesised
    assert result["interrupted"] is True and result["wav_path"] is None and speaker.last_barge_in_ms < 200
    assert not (await speaker.speak("Yes?"))["interrupted"]
    assert types_of(await drain(events)) == [TTS_DONE, TTS_START, TTS_DONE]
    deaf = await make(output="wav", wav_dir=tmp_path, barge_in=False)
    speaking = asyncio.create_task(deaf.speak(TEXT))
    assert (await asyncio.wait_for(events.get(), 5)).event.type == TTS_START
    rt.bus.publish_nowait("vad", loom.Event(SPEECH_START))
    assert (await speaking)["interrupted"] is False
    events.close()


def test_importing_loom_audio_loads_no_audio_library():
    import subprocess
    import sys

    code = "import sys, loom.audio; print([m for m in ('numpy', 'sounddevice', 'piper') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# -- the tool -------------------------------------------------------------------------------
async def test_tts_speak_tool_through_the_registry(rt, make, tmp_path):
    speaker = await make(output="wav", wav_dir=tmp_path, tools=rt.tools)
    assert "tts.speak" in rt.tools and rt.tools.describe("tts.speak")["schema"]["required"] == ["text"]
    ok = await rt.tools.invoke("tts.speak", {"text": TEXT, "rate": 1.5, "volume": 1.0})
    assert ok.ok, ok.error
    assert ok.output["engine"] == "piper" and wav_info(ok.output["wav_path"])[2] == 22050
    bad = [
        {},  # text is required
        {"text": 42},
        {"text": "hi", "rate": 3},
        {"text": "hi", "volume": 0.1},
        {"text": "hi", "speed": 2},  # unknown argument
        {"text": "hi", "voice": str(tmp_path / "missing.onnx")},  # passes the schema, refused by the speaker
    ]
    for args in bad:
        result = await rt.tools.invoke("tts.speak", args)
        assert not result.ok and result.error.code == "INVALID_PARAMS", (args, result.error)
    await speaker.stop()
    assert "tts.speak" not in rt.tools
    await speaker.start()  # a stopped speaker starts again, its tool with it
    assert "tts.speak" in rt.tools and (await rt.tools.invoke("tts.speak", {"text": "Again."})).ok


async def test_timeout_is_an_error_and_the_speaker_goes_on(rt, make, tmp_path):
    events = rt.bus.subscribe("tts")
    speaker = await make(output="wav", wav_dir=tmp_path, tools=rt.tools, timeout_s=0.02)
    with pytest.raises(ToolError) as info:
        await speaker.speak(LONG)
    assert info.value.code == "ACTION_TIMEOUT"
    result = await rt.tools.invoke("tts.speak", {"text": LONG})
    assert result.status == "ACTION_TIMEOUT" and result.error.code == "ACTION_TIMEOUT"
    got = await drain(events)
    assert types_of(got) == [TTS_START, TTS_ERROR, TTS_START, TTS_ERROR]
    assert got[1].event.metadata["timeout_ms"] == "20" and "within" in got[1].event.metadata["error"]
    speaker.timeout_s = 20.0
    assert not (await speaker.speak("Still here."))["interrupted"]
    assert speaker.stats["timeouts"] == 2
    # the caller's own deadline (the registry's timeout) cancels the utterance: tts.error "cancelled"
    result = await rt.tools.invoke("tts.speak", {"text": LONG}, timeout=0.02)
    assert result.error.code == "ACTION_TIMEOUT"
    got = await drain(events)
    assert types_of(got)[-2:] == [TTS_START, TTS_ERROR] and got[-1].event.metadata["error"] == "cancelled"
    assert not (await speaker.speak("Still here."))["interrupted"]
    events.close()


# -- espeak-ng and the engine faults ------------------------------------------------------
async def test_espeak_engine(rt, make, tmp_path):
    events = rt.bus.subscribe("tts")
    speaker = await make(engine="espeak", output="wav", wav_dir=tmp_path, tools=rt.tools)
    assert (speaker.engine, speaker.voice, speaker.sample_rate) == ("espeak", "en-us", 22050)
    result = await speaker.speak(TEXT)
    width, channels, rate, seconds = wav_info(result["wav_path"])
    assert (width, channels, rate) == (2, 1, 22050) and 1.5 < seconds < 5.0, seconds
    bad = await rt.tools.invoke("tts.speak", {"text": "hi", "voice": "xx-nope"})
    assert bad.error.code == "INVALID_PARAMS" and "voice does not exist" in bad.error.message
    got = await drain(events)
    assert types_of(got) == [TTS_START, TTS_DONE, TTS_START, TTS_ERROR]
    assert got[0].event.metadata["engine"] == "espeak"
    events.close()


async def test_a_missing_voice_is_a_clear_error_or_espeak_in_auto_mode(rt, tmp_path):
    missing_voice = tmp_path / "nope.onnx"
    strict = TtsSpeaker(rt.bus, spawn=rt.spawn, engine="piper", voice=missing_voice, output="wav")
    with pytest.raises(UsageError, match=r"piper voice .*nope\.onnx does not exist"):
        await strict.start()
    assert not strict.running and loom_threads() == []
    auto = TtsSpeaker(rt.bus, spawn=rt.spawn, voice=missing_voice, output="wav", wav_dir=tmp_path)
    await auto.start()
    try:
        assert auto.engine == "espeak" and "does not exist" in auto.fallback_reason
        assert wav_info((await auto.speak(TEXT))["wav_path"])[2] == 22050
    finally:
        await auto.stop()


async def test_no_engine_at_all_is_a_clear_error(rt, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on it
    only_espeak = TtsSpeaker(rt.bus, spawn=rt.spawn, engine="espeak", output="wav")
    with pytest.raises(UsageError, match="espeak-ng is not on PATH"):
        await only_espeak.start()
    auto = TtsSpeaker(rt.bus, spawn=rt.spawn, voice=tmp_path / "nope.onnx", output="wav")
    with pytest.raises(UsageError, match="no text-to-speech engine: piper voice .* does not exist; espeak-ng"):
        await auto.start()
    assert loom_threads() == []


async def test_bad_options_are_refused_at_construction(rt):
    for options in ({"engine": "festival"}, {"output": "speaker"}, {"rate": 5}, {"volume": 0}, {"timeout_s": 0}):
        with pytest.raises(UsageError):
            TtsSpeaker(rt.bus, spawn=rt.spawn, **options)


# -- output devices -----------------------------------------------------------------------
async def test_no_output_device_falls_back_to_wav(rt, make, tmp_path, monkeypatch):
    monkeypatch.setenv("PULSE_SERVER", "unix:/nonexistent/native")  # no audio server reachable
    refresh_portaudio()
    try:
        find_output(None, 22050)
        pytest.skip("this machine has a real output device")
    except NoOutputDevice:
        pass
    speaker = await make(wav_dir=tmp_path)
    assert speaker.device is None and "no default output device" in speaker.fallback_reason
    result = await speaker.speak(TEXT)
    assert result["wav_path"] and wav_info(result["wav_path"])[3] > 1.5
    strict = TtsSpeaker(rt.bus, spawn=rt.spawn, output="device")
    with pytest.raises(NoOutputDevice):
        await strict.start()


@pytest.mark.slow
async def test_real_playback_through_a_pulseaudio_null_sink(virtual_audio, make, tmp_path):
    va = virtual_audio
    await asyncio.sleep(2.5)  # the capture of the sink's monitor is trustworthy only after this (recipe §4)
    speaker = await make(wav_dir=tmp_path)  # a device, and a copy of each utterance in tmp_path
    assert speaker.device is not None and speaker.device.rate == 22050
    recording = va.record()
    await asyncio.sleep(0.2)
    result = await speaker.speak(TEXT)
    await asyncio.sleep(0.3)
    heard = recording.stop()
    said, rate = read_wav(result["wav_path"])
    assert rate == va.out_rate and not result["interrupted"]
    assert result["playback_ms"] >= 0.9 * len(said) / rate * 1000
    assert 0 < result["first_audio_ms"] < 5000
    # What reached the speaker sink is the synthesised speech: align on the first loud sample.
    h0, s0 = np.argmax(np.abs(heard) > 1000), np.argmax(np.abs(said) > 1000)
    n = rate // 2
    window = heard[h0 : h0 + n].astype(np.float64), said[s0 : s0 + n].astype(np.float64)
    assert np.corrcoef(*window)[0, 1] > 0.9
    assert va.sink_inputs(va.out_sink, pid=os.getpid()) == []  # the stream is closed between utterances

    # A device that refuses 22.05 kHz mono: the player resamples (here to 16 kHz stereo; PulseAudio
    # converts back to the sink's 22.05 kHz mono). A 440 Hz tone of 0.5 s must arrive as one.
    device = replace(speaker.device, rate=16000, channels=2)
    chunks: queue.Queue = queue.Queue()
    tone = (np.sin(np.arange(rate // 2) * 2 * np.pi * 440 / rate) * 8000).astype(np.int16)
    chunks.put(tone)
    chunks.put(None)
    recording = va.record()
    await asyncio.sleep(0.2)
    played = await asyncio.to_thread(play, device, rate, chunks, threading.Event())
    await asyncio.sleep(0.3)
    heard = recording.stop()
    loud = np.nonzero(np.abs(heard) > 2000)[0]
    span = heard[loud[0] : loud[-1]].astype(np.float64)
    assert not played.interrupted and abs(len(span) / rate - 0.5) < 0.05, len(span) / rate
    crossings = np.count_nonzero(np.diff(np.signbit(span)))
    assert abs(crossings / 2 / (len(span) / rate) - 440) < 15  # not 320 Hz: the rate was converted


async def test_output_device_by_name_or_index_and_a_missing_one_refused(rt, virtual_audio, make):
    by_name = await make(output_device="pulse")
    assert by_name.device.name == "pulse"
    assert (await by_name.speak("Yes."))["playback_ms"] > 0
    by_index = await make(output_device=by_name.device.index, engine="espeak")
    assert by_index.device == by_name.device
    assert (await by_index.speak("Yes."))["playback_ms"] > 0
    speaker = TtsSpeaker(rt.bus, spawn=rt.spawn, output_device="no such card")
    with pytest.raises(NoOutputDevice, match="no such card"):
        await speaker.start()


# -- barge-in and stop during playback ----------------------------------------------------
async def test_barge_in_stops_playback_within_200_ms(rt, virtual_audio, make):
    va = virtual_audio
    events = rt.bus.subscribe("tts")
    speaker = await make()
    assert speaker.device is not None
    speaking = asyncio.create_task(speaker.speak(LONG))
    waiting = asyncio.create_task(speaker.speak("And another thing."))  # stale once the user speaks
    await until(lambda: speaker.playing, timeout=15)
    await asyncio.sleep(0.5)
    assert len(va.sink_inputs(va.out_sink, pid=os.getpid())) == 1
    t0 = time.perf_counter()
    rt.bus.publish_nowait("vad", loom.Event(SPEECH_START, metadata={"utterance_id": "u1"}))
    result = await speaking
    returned_ms = (time.perf_counter() - t0) * 1000
    assert result["interrupted"] is True and 0 < result["playback_ms"] < 8000
    assert speaker.last_barge_in_ms is not None and speaker.last_barge_in_ms < 200, speaker.last_barge_in_ms
    assert returned_ms < 500
    assert va.sink_inputs(va.out_sink, pid=os.getpid()) == []  # the device is released
    dropped = await waiting
    assert dropped["interrupted"] is True and dropped["synthesis_ms"] == 0.0
    got = await drain(events)
    assert types_of(got) == [TTS_START, TTS_DONE]
    assert got[1].event.metadata["interrupted"] == "true" and got[1].event.metadata["reason"] == "barge_in"
    # ready at once for the next utterance, which plays to the end
    after = await speaker.speak("Yes?")
    assert not after["interrupted"] and after["playback_ms"] > 0
    assert speaker.stats["barge_ins"] == 1 and speaker.stats["dropped"] == 1
    events.close()


async def test_stop_during_playback_frees_the_device_and_leaves_no_thread(rt, virtual_audio, make):
    va = virtual_audio
    threads_before = set(threading.enumerate())
    speaker = await make(tools=rt.tools)
    speaking = asyncio.create_task(speaker.speak(LONG))
    await until(lambda: speaker.playing, timeout=15)
    assert loom_threads() and len(va.sink_inputs(va.out_sink, pid=os.getpid())) == 1
    t0 = time.perf_counter()
    await speaker.stop()
    stop_ms = (time.perf_counter() - t0) * 1000
    result = await speaking
    assert result["interrupted"] is True and stop_ms < 2000, stop_ms
    assert set(threading.enumerate()) <= threads_before and loom_threads() == []
    assert va.sink_inputs(va.out_sink, pid=os.getpid()) == []
    assert "tts.speak" not in rt.tools
    with pytest.raises(ToolError) as info:
        await speaker.speak("anyone?")
    assert info.value.code == "PROVIDER_UNAVAILABLE"
