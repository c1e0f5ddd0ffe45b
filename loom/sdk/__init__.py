"""The user-facing agent API: Agent, Context, Thread, @capability, and the transport seam."""

from loom.sdk.agent import Agent, Handler
from loom.sdk.capability import Capability, capability, get_capability
from loom.sdk.context import Context, Thread
from loom.sdk.transport import LocalTransport, Transport

__all__ = [
    "Agent",
    "Capability",
    "Context",
    "Handler",
    "LocalTransport",
    "Thread",
    "Transport",
    "capability",
    "get_capability",
]
