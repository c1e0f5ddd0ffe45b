"""Audio benchmarks: VAD cost, STT real-time factor and latency, first TTS audio, barge-in.

    python bench/audio.py                  # all workloads, 3 runs each
    python bench/audio.py --runs 5 latency

One JSON line per workload with medians over the runs (each run in a fresh process):

- ``vad``: µs of CPU per VAD frame (silero: 32 ms windows; webrtc: 20 ms frames) over 20 s of
  speech and silence fed as fast as the gate takes it.
- ``latency``: the pipeline on a real-time WAV source (five sentences, 4 s apart; tiny.en int8,
  2 threads): ``transcript.final`` after the VAD's ``vad.speech_end`` (``final_*``) and after the
  last audible sample of the sentence in the file (``spoken_end_to_final_*``: what the user waits,
  the VAD's hangover included; target p50 ≤ 0.7 s), the real-time factor of transcription, and
  ``vad.speech_end`` → the first sample of the spoken answer on the (virtual) sound card.
- ``barge_in``: the speaker saying a long sentence on a PulseAudio null sink; ``vad.speech_start``
  published 0.4 s in; the time until the device stopped (target ≤ 200 ms), 8 times per run.

``latency`` and ``barge_in`` need PulseAudio (``tests/peers/virtual_audio.py`` starts a private one).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _stats import workload_args

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "hey loom, what is the weather in Paris",
    "loom, what time is it",
    "please open the door",
    "hey loom, turn on the lights in the kitchen",
    "what is the capital of Italy",
]


def _speech_wav(path: Path, sentences: list[str], gap_s: float, ends: list[float] | None = None) -> float:
    """Write the sentences with silences between; ``ends`` gets where each one's speech ends (s)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from tests.peers.speech import silence, speech, write_wav

    parts, at = [silence(0.5)], 0.5
    for s in sentences:
        said = speech(s)
        voiced = np.flatnonzero(np.abs(said.astype(np.int32)) > 300)  # the last audible sample
        if ends is not None:
            ends.append(at + (voiced[-1] + 1 if voiced.size else said.size) / 16000)
        parts += [said, silence(gap_s)]
        at += (said.size + int(gap_s * 16000)) / 16000
    write_wav(path, *parts)
    return sum(p.size for p in parts) / 16000


async def _vad(engine: str) -> dict:
    import loom
    from loom.audio import VadGate, WavSource
    from loom.audio.stage import Stage

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        seconds = _speech_wav(wav, SENTENCES * 2, 1.0)
        async with loom.Loom(native_tools=()) as rt:
            vad = VadGate(rt.bus, spawn=rt.spawn, engine=engine)
            await vad.start()
            src = WavSource(wav, realtime=False, tail_silence_ms=500)
            src.attach(rt.bus, spawn=rt.spawn)
            await src.start()
            await src.finished
            await asyncio.sleep(0.2)
            out = {"engine": engine, "audio_s": round(seconds, 1), "us_per_frame": round(vad.us_per_frame, 1)}
            out["frames"] = vad.stats.get("frames", 0)
            out["utterances"] = vad.stats.get("utterances", vad.stats.get("speech_start", 0))
            await src.stop()
            await Stage.stop(vad)
    return out


async def _latency() -> dict:
    import loom
    from loom import QoS
    from loom.audio import VoicePipeline, WavSource

    sys.path.insert(0, str(ROOT))
    from tests.peers.virtual_audio import VirtualAudio, missing

    reason = missing()
    va = VirtualAudio().start() if reason is None else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "talk.wav"
            spoken_ends: list[float] = []  # where each sentence's speech ends in the file (s)
            _speech_wav(wav, SENTENCES, 4.0, spoken_ends)  # room for each answer before the next question
            async with loom.Loom(native_tools=()) as rt:
                sub = rt.bus.subscribe(["audio.mic", "vad", "transcript", "tts"], qos=QoS.BACKGROUND, maxsize=100_000)
                tts = {"deterministic": True, "output": "device" if va else "wav"}
                pipe = VoicePipeline(rt, source=WavSource(wav, realtime=True), tts=tts)
                await pipe.start()
                await pipe.source.finished
                await asyncio.sleep(1.0)
                ends: list[float] = []
                finals: list[tuple[float, float]] = []  # (latency_ms, duration_ms)
                final_at: list[float] = []
                first_chunk = None
                starts: list[float] = []  # tts.start: the answer's synthesis begins
                first: list[float | None] = []  # tts.done: ms from there to its first sample played
                while sub.qsize():
                    _, e = sub.get_nowait()
                    md = e.metadata
                    if e.type == "audio_chunk":
                        if md.get("seq") == "1":  # the file starts playing (real time) at this chunk
                            first_chunk = e.timestamp_ms
                        continue
                    if e.type == "vad.speech_end":
                        ends.append(e.timestamp_ms)
                    elif e.type == "transcript.final":
                        finals.append((float(md["latency_ms"]), float(md["duration_ms"])))
                        final_at.append(e.timestamp_ms)
                    elif e.type == "tts.start":
                        starts.append(e.timestamp_ms)
                    elif e.type == "tts.done":
                        v = md.get("first_audio_ms")
                        first.append(float(v) if v not in (None, "", "None") else None)
                first_audio = []
                for started, ms in zip(starts, first, strict=False):
                    before = [t for t in ends if t <= started]
                    if ms is not None and before:
                        first_audio.append(started - before[-1] + ms)
                stt = pipe["stt"]
                await pipe.stop()
                sub.close()
    finally:
        if va is not None:
            va.stop()
    lat = [f[0] for f in finals]
    # from the last audible sample of each sentence (where the user stopped talking) to its final
    spoken = [at - (first_chunk + end * 1000) for at, end in zip(final_at, spoken_ends, strict=False)]
    return {
        "utterances": len(finals),
        "final_p50_ms": round(statistics.median(lat), 1) if lat else None,
        "final_max_ms": round(max(lat), 1) if lat else None,
        "spoken_end_to_final_p50_ms": round(statistics.median(spoken), 1) if spoken and first_chunk else None,
        "spoken_end_to_final_max_ms": round(max(spoken), 1) if spoken and first_chunk else None,
        "stt_rtf": round(getattr(stt, "rtf", float("nan")), 3),
        "first_audio_p50_ms": round(statistics.median(first_audio), 1) if first_audio else None,
        "output": "device" if va else "wav",
    }


async def _barge_in() -> dict:
    import loom
    from loom.audio import TtsSpeaker
    from loom.events.event import Event

    sys.path.insert(0, str(ROOT))
    from tests.peers.virtual_audio import VirtualAudio, missing

    if (reason := missing()) is not None:
        return {"skipped": reason}
    stops: list[float] = []
    with VirtualAudio().start():
        async with loom.Loom(native_tools=()) as rt:
            tts = TtsSpeaker(rt.bus, spawn=rt.spawn, deterministic=True, output="device")
            await tts.start()
            text = "This is a long answer that goes on and on, so that there is time to interrupt it."
            for _ in range(8):
                speaking = asyncio.ensure_future(tts.speak(text))
                await asyncio.sleep(0.4)
                rt.bus.publish_nowait("vad", Event("vad.speech_start", metadata={"utterance_id": "bench"}))
                await speaking
                if tts.last_barge_in_ms is not None:
                    stops.append(tts.last_barge_in_ms)
            await tts.stop()
    return {
        "n": len(stops),
        "stop_p50_ms": round(statistics.median(stops), 1),
        "stop_max_ms": round(max(stops), 1),
    }


WORKLOADS = {
    "vad_silero": lambda: _vad("silero"),
    "vad_webrtc": lambda: _vad("webrtc"),
    "latency": _latency,
    "barge_in": _barge_in,
}


def main() -> None:
    args = workload_args(__doc__, WORKLOADS)
    if args.worker:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        print(json.dumps(asyncio.run(WORKLOADS[args.worker]())))
        return
    for name in args.workloads:
        runs = []
        for _ in range(args.runs):
            cmd = [sys.executable, __file__, "--worker", name]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        nums = {k for k, v in runs[0].items() if isinstance(v, int | float) and not isinstance(v, bool)}
        med = {k: statistics.median(r[k] for r in runs if r.get(k) is not None) for k in nums}
        line = {"bench": "audio", "workload": name, "runs": args.runs, **runs[0], **med}
        line["runs_raw"] = runs
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
