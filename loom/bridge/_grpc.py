"""``grpc``, imported with gRPC core set for latency. Every bridge module imports grpc from here.

gRPC core (1.85) routes TCP through its EventEngine client and listener by default; on this
kind of machine that adds about 100 µs to every stream round trip (bench/bridge.py measures a
bare grpc.aio ping-pong at ~270 µs with them, ~170 µs with core's other TCP path). Core reads
``GRPC_EXPERIMENTS`` once, when grpc is first imported, so this module sets it for the length of
that import only (children the process starts later do not inherit it).

Left alone: when the user set ``GRPC_EXPERIMENTS`` themselves, when ``LOOM_GRPC_TUNING=0``, or
when something imported grpc before Loom did (then :data:`TUNED` is False and
``BridgeServer.describe()`` says so).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["EXPERIMENTS", "TUNED", "grpc"]

EXPERIMENTS = "-event_engine_client,-event_engine_listener"


def _import() -> tuple[Any, bool]:
    if "grpc" in sys.modules or "GRPC_EXPERIMENTS" in os.environ or os.environ.get("LOOM_GRPC_TUNING") == "0":
        import grpc

        return grpc, False
    os.environ["GRPC_EXPERIMENTS"] = EXPERIMENTS
    try:
        import grpc
        import grpc.aio  # noqa: F401 - the core is initialised by these imports
    finally:
        del os.environ["GRPC_EXPERIMENTS"]
    return grpc, True


grpc, TUNED = _import()
