"""Processes for the cluster tests: peers and ``loom worker`` replicas, started and ended by the tests.

Each process prints a JSON line with ``"ready": true`` once joined; :func:`start` waits for it.
Ending one closes its stdin and sends SIGTERM (SIGKILL for a crash), then waits for it: nothing
outlives a test.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PEER = str(Path(__file__).with_name("cluster_peer.py"))


class Proc:
    """A child process with its ready line (``info``) and the lines it printed after."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict[str, Any], stderr: Any) -> None:
        self.proc = proc
        self.info = info
        self._stderr = stderr  # a file, not a pipe: a chatty child never blocks on a full pipe

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """A crash: SIGKILL, no goodbye (its directory entry and unacked messages stay behind)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def stop(self, timeout: float = 10.0) -> int:
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.kill()
        code = await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._stderr.close()
        return code

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")


async def start(*args: str, env: dict[str, str] | None = None, timeout: float = 20.0) -> Proc:
    """Run ``python ARGS`` from the repository root and wait for its ready line.

    Raises:
        RuntimeError: it exited or printed no ready line within ``timeout`` (its stderr in the message).
    """
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Proc.stop (or below)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    try:
        async with asyncio.timeout(timeout):
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                with contextlib.suppress(ValueError):
                    info = json.loads(line)
                    if isinstance(info, dict) and info.get("ready"):
                        return Proc(proc, info, stderr)
    except TimeoutError:
        pass
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.communicate()
    stderr.seek(0)
    err = stderr.read().decode(errors="replace")
    stderr.close()
    raise RuntimeError(f"{args} did not get ready: {err[-2000:]}")


async def peer(role: str, url: str, name: str, **options: Any) -> Proc:
    """A runtime running ``tests/peers/cluster_peer.py ROLE``."""
    return await start(PEER, role, url, name, json.dumps({"heartbeat_s": 0.5, **options}))


async def worker(url: str, spec: str = "tests.peers.cluster_agents:slow", *extra: str, **env: str) -> Proc:
    """A ``loom worker`` replica."""
    return await start("-m", "loom.cli", "worker", "--cluster", url, spec, *extra, env=env)


async def stop_all(procs: list[Proc]) -> None:
    await asyncio.gather(*(p.stop() for p in procs))


async def reports_by_id(done: Any, ids: list[str], timeout: float) -> collections.Counter[str]:
    """Count the ``work.done`` reports on subscription ``done`` by event id until each of ``ids`` has one
    (the test's ``until`` raises TimeoutError after ``timeout``)."""
    from tests.conftest import until

    handled: collections.Counter[str] = collections.Counter()

    async def collect() -> None:
        while True:
            handled[(await done.get()).event.json()["id"]] += 1

    collector = asyncio.create_task(collect())
    try:
        await until(lambda: set(ids) <= set(handled), timeout=timeout)
    finally:
        collector.cancel()
    return handled
