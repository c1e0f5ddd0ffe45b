"""Audio sources: WAV files and the microphone publish 20 ms chunks of 16 kHz mono PCM."""

from __future__ import annotations

import asyncio
import threading
import time
import wave

import numpy as np
import pytest

from loom import QoS, UsageError
from loom.audio.sources import MicSource, WavSource, input_devices
from tests.peers.speech import silence, speech, write_wav


def _chunks(sub):
    out = []
    while sub.qsize():
        out.append(sub.get_nowait().event)
    return out


async def _play(rt, source):
    source.attach(rt.bus, spawn=rt.spawn)
    await source.start()
    await source.finished
    await source.stop()


async def test_a_wav_file_becomes_20ms_chunks_with_the_contract_metadata(rt, tmp_path):
    audio = np.concatenate([silence(0.3), speech("hello loom"), silence(0.2)])
    path = write_wav(tmp_path / "hello.wav", audio)
    sub = rt.bus.subscribe("audio.mic", qos=QoS.BACKGROUND)
    src = WavSource(path, realtime=False, tail_silence_ms=100)
    await _play(rt, src)
    chunks = _chunks(sub)
    n = -(-(audio.size + 1600) // 320)
    assert len(chunks) == n == src.stats["chunks"]
    first = chunks[0]
    assert first.type == "audio_chunk" and first.priority == 90 and first.source == "wav.hello"
    assert first.metadata | {"seq": "1"} == {
        "sample_rate": "16000",
        "channels": "1",
        "encoding": "pcm_s16le",
        "frame_samples": "320",
        "device": "wav:hello.wav",
        "seq": "1",
    }
    assert all(len(c.payload) == 640 for c in chunks)
    joined = np.frombuffer(b"".join(c.payload for c in chunks), dtype="<i2")
    assert np.array_equal(joined[: audio.size], audio)  # the samples themselves, bit for bit
    assert [int(c.metadata["seq"]) for c in chunks] == list(range(1, n + 1))
    sub.close()


async def test_realtime_playback_takes_as_long_as_the_audio(rt, tmp_path):
    path = write_wav(tmp_path / "s.wav", silence(0.5))
    src = WavSource(path, realtime=True, tail_silence_ms=0)
    t0 = time.monotonic()
    await _play(rt, src)
    assert 0.45 <= time.monotonic() - t0 <= 1.5 and src.stats["chunks"] == 25


async def test_other_rates_and_stereo_are_converted_to_16k_mono(rt, tmp_path):
    t = np.arange(22050) / 22050
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(2)
        wf.setsampwidth(2)
        wf.setframerate(22050)
        wf.writeframes(np.stack([tone, tone], axis=1).astype("<i2").tobytes())
    sub = rt.bus.subscribe("audio.mic", qos=QoS.BACKGROUND)
    await _play(rt, WavSource(path, realtime=False, tail_silence_ms=0))
    samples = np.frombuffer(b"".join(c.payload for c in _chunks(sub)), dtype="<i2")
    assert abs(samples.size - 16000) <= 320
    spectrum = np.abs(np.fft.rfft(samples[:16000].astype(np.float32)))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2  # still a 440 Hz tone after resampling
    sub.close()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk"), "not a readable WAV"),
        (lambda p: None, "cannot read"),
        (lambda p: _write_8bit(p), "8-bit samples"),
    ],
)
async def test_a_bad_wav_is_refused_at_start_with_the_reason(rt, tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    src = WavSource(path)
    src.attach(rt.bus, spawn=rt.spawn)
    with pytest.raises(UsageError, match=reason):
        await src.start()
    assert not src.running


def _write_8bit(path):
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(1)
        wf.setframerate(8000)
        wf.writeframes(bytes(800))


async def test_a_source_outside_a_pipeline_says_so():
    with pytest.raises(UsageError, match="not attached"):
        await WavSource("x.wav").start()


async def test_stop_mid_file_ends_the_playback_task(rt, tmp_path):
    path = write_wav(tmp_path / "long.wav", silence(5))
    src = WavSource(path, realtime=True)
    src.attach(rt.bus, spawn=rt.spawn)
    await src.start()
    await asyncio.sleep(0.1)
    await src.stop()
    assert src.finished.done() and src.stats["chunks"] < 50 and not src.running


@pytest.mark.skipif(bool(input_devices()), reason="this machine has an input device")
async def test_no_input_device_is_a_clear_error_and_nothing_starts(rt):
    mic = MicSource()
    mic.attach(rt.bus, spawn=rt.spawn)

    def ours():  # not the loop's default executor, which asyncio keeps for the loop's life
        return {t.ident for t in threading.enumerate() if not t.name.startswith("asyncio_")}

    before = ours()
    with pytest.raises(UsageError, match="no audio input device"):
        await mic.start()
    assert not mic.running and ours() == before


def _source_outputs(va) -> int:
    return len([ln for ln in va.pactl("list", "short", "source-outputs").splitlines() if ln.strip()])


async def test_the_microphone_records_what_is_played_into_it_and_stop_frees_the_device(rt, tmp_path, virtual_mic):
    said = np.concatenate([silence(0.2), speech("hello loom"), silence(0.3)])
    path = write_wav(tmp_path / "said.wav", said)
    sub = rt.bus.subscribe("audio.mic", qos=QoS.BACKGROUND, maxsize=100_000)
    before = _source_outputs(virtual_mic)
    mic = MicSource()
    mic.attach(rt.bus, spawn=rt.spawn)
    await mic.start()
    assert mic.running and mic.device_label  # "<index>:<name>" of the device opened
    assert _source_outputs(virtual_mic) == before + 1
    await asyncio.to_thread(virtual_mic.play, path)
    await asyncio.sleep(0.3)
    await mic.stop()
    assert _source_outputs(virtual_mic) == before  # the device is free again
    chunks = _chunks(sub)
    assert chunks and all(c.type == "audio_chunk" and len(c.payload) == 640 for c in chunks)
    got = np.frombuffer(b"".join(c.payload for c in chunks), dtype="<i2").astype(np.float32)
    ref = said.astype(np.float32)
    corr = np.correlate(got, ref[4000:12000], mode="valid")  # find the spoken part in the recording
    k = int(np.argmax(corr))
    seg = got[k : k + 8000]
    r = np.corrcoef(seg, ref[4000:12000])[0, 1]
    assert r > 0.98, r  # what the microphone heard is what was played (16 kHz end to end: no resampling)
    assert mic.stats.get("dropped_blocks", 0) == 0
    # the device can be opened again at once
    again = MicSource()
    again.attach(rt.bus, spawn=rt.spawn)
    await again.start()
    await again.stop()
    sub.close()


async def test_a_device_named_that_does_not_exist_lists_the_ones_there_are(rt, virtual_mic):
    mic = MicSource(device="no-such-microphone")
    mic.attach(rt.bus, spawn=rt.spawn)
    with pytest.raises(UsageError, match="no input device 'no-such-microphone'; input devices: .*pulse"):
        await mic.start()
    assert not mic.running


async def test_the_device_thread_drops_when_the_loop_falls_behind_and_never_loses_the_wakeup(rt):
    """PortAudio's callback, called here directly from another thread: a full hand-over queue drops
    blocks (counted) instead of waiting, and a block arriving after a drain schedules the next one."""
    sub = rt.bus.subscribe("audio.mic", qos=QoS.BACKGROUND)
    mic = MicSource(queue_blocks=2)
    mic.attach(rt.bus, spawn=rt.spawn)
    mic._loop, mic.running, mic.rate, mic.channels = asyncio.get_running_loop(), True, 16000, 1
    block = np.full(320, 1000, dtype=np.int16)

    def device(n):
        for _ in range(n):
            mic._callback(block, 320, None, None)

    await asyncio.to_thread(device, 5)  # the loop is busy elsewhere: only 2 fit
    assert mic.stats["dropped_blocks"] == 3
    await asyncio.sleep(0.01)
    assert len(_chunks(sub)) == 2
    for _ in range(3):  # after each drain, the next block wakes the loop again
        await asyncio.to_thread(device, 1)
        await asyncio.sleep(0.01)
        assert len(_chunks(sub)) == 1
    assert mic.stats["chunks"] == 5 and mic.stats["dropped_blocks"] == 3
    mic.running = False
    sub.close()
