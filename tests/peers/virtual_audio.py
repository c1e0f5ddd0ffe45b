"""A virtual sound card for the audio tests: a private PulseAudio daemon with two null sinks.

No sound card, no /dev/snd: PulseAudio's null sinks are real devices to PortAudio (through the
ALSA ``pulse``/``default`` PCMs), paced in real time (recipe: ../shared/reference/audio-recipes.md §4).

    from tests.peers.virtual_audio import VirtualAudio, missing

    if (reason := missing()) is not None:
        pytest.skip(reason)
    with VirtualAudio().start(settle_s=2.5) as va:     # or va = VirtualAudio().start(); ...; va.stop()
        va.play("hello.wav")                            # into the microphone (blocks until played)
        rec = va.record()                               # what reaches the speaker sink, from now on
        ...                                             # sounddevice: default input/output = mic/speaker sink
        samples = rec.stop()                            # int16 mono numpy array at va.out_rate
        va.sink_inputs(va.out_sink, pid=os.getpid())   # this process's streams in a sink ([] once released)

What it sets up:

* ``mic_sink`` (``loom_spk``, 16 kHz mono s16le): its monitor ``loom_spk.monitor`` is the *default
  source*, so whatever is played into ``loom_spk`` is what a microphone stream records.
* ``out_sink`` (``loom_out``, 22.05 kHz mono s16le, piper's rate): the *default sink*, where a
  text-to-speech stage plays; it is a separate sink so the speaker never feeds the microphone.
* A 20 ms silence feeder (``pacat /dev/zero``) in each sink: without a low-latency stream a null
  sink renders in 2 s blocks and a capture of its monitor loses its first 1.5-2 s.
* This process's environment (``XDG_RUNTIME_DIR``, ``PULSE_SERVER``) points at the daemon while it
  runs, and PortAudio is re-initialised if sounddevice is already imported (PortAudio lists the
  devices once, at initialisation). :meth:`VirtualAudio.stop` restores both. ``env`` is the
  environment for subprocesses (``paplay``, ``parec``, a child Python).

API:

* ``VirtualAudio(root=None, *, mic_sink="loom_spk", mic_rate=16000, out_sink="loom_out",
  out_rate=22050)``: ``root`` is the daemon's runtime dir (a fresh temp dir, removed at stop).
* ``start(settle_s=0.0) -> self``: daemon, sinks, feeders, defaults, this process pointed at it.
  ``settle_s``: wait before a capture can be trusted, 2.5 s per the recipe (a capture opened
  earlier loses audio); playback-only tests need none. Open sounddevice streams only after it
  (re-initialising PortAudio would close them). Raises RuntimeError if the daemon does not come up.
* ``stop()``: close your sounddevice streams first. Idempotent; kills feeders, players, recorders
  and the daemon by pid, restores the environment, re-initialises PortAudio (no devices again)
  and removes its temp dir.
* ``play(path, sink=None, *, wait=True) -> Popen``: ``paplay --latency-msec=20`` of a WAV file into
  ``sink`` (default: the microphone sink).
* ``record(sink=None) -> Recording``: ``parec`` of ``sink``'s monitor (default: the speaker sink);
  ``Recording.stop(wait_s=3.0) -> np.ndarray`` (int16 mono) first waits until the capture covers
  the time it ran, since a monitor can deliver up to 2 s late; ``Recording.seconds`` so far.
* ``sink_inputs(sink=None, pid=None) -> list[dict]``: the streams playing into a sink (``pactl -f
  json``), of one process if ``pid`` is given: a released device shows none.
* ``pactl(*args) -> str``; ``env``: the environment for subprocesses; ``daemon``: its Popen.
* ``missing() -> str | None``: why the virtual card cannot run here (a binary or PortAudio missing).
* ``refresh_portaudio()``: make an imported sounddevice see the current server (start/stop do it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["Recording", "VirtualAudio", "missing", "refresh_portaudio"]

BINARIES = ("pulseaudio", "pactl", "pacat", "paplay", "parec")


def missing() -> str | None:
    """Why a virtual sound card cannot run here, or None when it can."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"no {', '.join(absent)} on PATH (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)"
    try:
        import sounddevice  # noqa: F401 - loads libportaudio
    except OSError as exc:
        return f"PortAudio is missing ({exc}; apt-get install libportaudio2)"
    return None


def refresh_portaudio() -> None:
    """Make an already-imported sounddevice see the current audio server (PortAudio scans once).
    Call it only while no stream of this process is open."""
    import sys

    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


class Recording:
    """``parec`` on a sink's monitor, from :meth:`VirtualAudio.record` to :meth:`stop`.

    A reader thread drains the pipe as data comes. The monitor can deliver late (a null sink that
    falls back to 2 s render blocks), so :meth:`stop` first waits, up to ``wait_s``, until the
    capture covers the time it has been running: stopping at once could cut the last seconds.
    """

    def __init__(self, proc: subprocess.Popen[bytes], rate: int) -> None:
        self.proc, self.rate = proc, rate
        self.started = time.monotonic()
        self._data = bytearray()
        self._reader = threading.Thread(target=self._read, name="virtual-audio-recorder", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(65536):
            self._data += chunk

    @property
    def seconds(self) -> float:
        """How much audio has been captured so far."""
        return len(self._data) / 2 / self.rate

    def stop(self, wait_s: float = 3.0) -> np.ndarray:
        """End the capture; the samples (int16 mono at ``rate``)."""
        wanted = time.monotonic() - self.started - 0.1
        deadline = time.monotonic() + wait_s
        while self.seconds < wanted and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        data = bytes(self._data)
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")


class VirtualAudio:
    """A private PulseAudio with a virtual microphone and a separate speaker sink (module doc)."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        mic_sink: str = "loom_spk",
        mic_rate: int = 16_000,
        out_sink: str = "loom_out",
        out_rate: int = 22_050,
    ) -> None:
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="loom-pulse-"))
        self.mic_sink, self.mic_rate, self.out_sink, self.out_rate = mic_sink, mic_rate, out_sink, out_rate
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(self.root), PULSE_SERVER=f"unix:{self.root}/pulse/native")
        self.env.pop("PULSE_SINK", None)
        self.env.pop("PULSE_SOURCE", None)
        self.daemon: subprocess.Popen[bytes] | None = None
        self._children: list[subprocess.Popen[bytes]] = []
        self._saved_env: dict[str, str | None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, settle_s: float = 0.0) -> VirtualAudio:
        """Start the daemon, the sinks and the feeders; point this process at them. Returns self.

        Raises:
            RuntimeError: the daemon did not come up within 10 s (its log is in the message).
        """
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # libpulse refuses a runtime dir others can read
        log = self.root / "pulse.log"
        sink = "module-null-sink sink_name={} rate={} channels=1 format=s16le sink_properties=device.description={}"
        # -n: no default.pa (no hardware detection, no suspend-on-idle, which would re-add the 2 s
        # blocks); auth-anonymous: no cookie in $HOME, shared with other sessions, is involved.
        self.daemon = subprocess.Popen(
            ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
             f"--log-target=file:{log}", "-L", "module-native-protocol-unix auth-anonymous=1",
             "-L", sink.format(self.mic_sink, self.mic_rate, "LoomVirtualMic"),
             "-L", sink.format(self.out_sink, self.out_rate, "LoomVirtualSpeaker")],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode != 0:
                if self.daemon.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(f"PulseAudio did not start (exit {self.daemon.poll()}): {text}")
                time.sleep(0.02)
            self.pactl("set-default-sink", self.out_sink)
            self.pactl("set-default-source", f"{self.mic_sink}.monitor")
            for name, rate in ((self.mic_sink, self.mic_rate), (self.out_sink, self.out_rate)):
                self._spawn(
                    ["pacat", f"--device={name}", "--latency-msec=20", "--raw", "--format=s16le",
                     f"--rate={rate}", "--channels=1", "/dev/zero"]
                )  # fmt: skip
            deadline = time.monotonic() + 5
            while len(self.sink_inputs()) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            self._point_here()
            time.sleep(settle_s)  # the sinks finish their old 2 s render block (recipe §4)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill feeders, players, recorders and the daemon (by pid); restore this process's environment."""
        for child in self._children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=5)
        self._children.clear()
        if self.daemon is not None:
            if self.daemon.poll() is None:
                self.daemon.terminate()
                try:
                    self.daemon.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.daemon.kill()
                    self.daemon.wait(timeout=5)
            self.daemon = None
        if self._saved_env is not None:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env = None
            refresh_portaudio()  # PortAudio forgets the devices of the daemon that is gone
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> VirtualAudio:
        return self if self.daemon is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- use -------------------------------------------------------------------------------
    def play(self, path: str | Path, sink: str | None = None, *, wait: bool = True) -> subprocess.Popen[bytes]:
        """Play a WAV file into ``sink`` (default: the microphone sink) with 20 ms latency."""
        proc = self._spawn(["paplay", f"--device={sink or self.mic_sink}", "--latency-msec=20", str(path)])
        if wait:
            proc.wait(timeout=60)
        return proc

    def record(self, sink: str | None = None) -> Recording:
        """Capture what is played into ``sink`` (default: the speaker sink) until ``.stop()``."""
        name = sink or self.out_sink
        rate = self.mic_rate if name == self.mic_sink else self.out_rate
        proc = self._spawn(
            ["parec", f"--device={name}.monitor", "--raw", "--format=s16le", f"--rate={rate}", "--channels=1",
             "--latency-msec=20"], stdout=subprocess.PIPE,
        )  # fmt: skip
        return Recording(proc, rate)

    def sink_inputs(self, sink: str | None = None, pid: int | None = None) -> list[dict]:
        """The streams playing into ``sink`` (all sinks when None), of process ``pid`` if given."""
        sinks = {s["index"]: s["name"] for s in json.loads(self.pactl("-f", "json", "list", "sinks") or "[]")}
        out = []
        for si in json.loads(self.pactl("-f", "json", "list", "sink-inputs") or "[]"):
            props = si.get("properties", {})
            if sink is not None and sinks.get(si.get("sink")) != sink:
                continue
            if pid is not None and props.get("application.process.id") != str(pid):
                continue
            out.append(si)
        return out

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, check=True).stdout

    # -- inside ----------------------------------------------------------------------------
    def _spawn(self, argv: list[str], stdout: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.DEVNULL)
        self._children.append(proc)
        return proc

    def _point_here(self) -> None:
        self._saved_env = {
            k: os.environ.get(k) for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER", "PULSE_SINK", "PULSE_SOURCE")
        }
        for key in ("PULSE_SINK", "PULSE_SOURCE"):
            os.environ.pop(key, None)
        os.environ["XDG_RUNTIME_DIR"] = self.env["XDG_RUNTIME_DIR"]
        os.environ["PULSE_SERVER"] = self.env["PULSE_SERVER"]
        refresh_portaudio()
