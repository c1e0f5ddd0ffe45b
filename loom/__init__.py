"""Loom for Python: an event-driven AI agent runtime that lives inside a Jupyter kernel.

Events in, actions out, state in the middle. Start here::

    import loom

    async with loom.Loom() as rt:
        sub = rt.bus.subscribe("market.price.*")
        await rt.bus.publish("market.price.BTC", loom.Event.from_json("price", {"usd": 1}))
        topic, event = await sub.get()
"""

import logging as _logging

from loom import collab
from loom._version import __version__
from loom.agents import (
    Action,
    AgentBehavior,
    AgentConfig,
    AgentDirectory,
    AgentInfo,
    AgentNotFound,
    AgentRuntime,
    AgentState,
    CapabilityDescriptor,
    CapabilityDirectory,
    ManagedAgent,
    MemoryStateStore,
    RestartPolicy,
    SQLiteStateStore,
    StateStore,
)
from loom.collab import (
    BarrierResult,
    CollabTimeout,
    ContractNetResult,
    FanoutResult,
    RequestTimeout,
    Strategy,
    barrier,
    contract_net,
    fanout_fanin,
    request_reply,
)
from loom.errors import (
    BackpressureTimeout,
    BrokenError,
    ClosedError,
    InvalidEvent,
    InvalidTopic,
    LoomError,
    NoRuntime,
    NoSubscribers,
    PayloadError,
    RuntimeStopped,
    StopFailed,
    StreamRefused,
    SubscriptionClosed,
    ToolError,
    UsageError,
    WouldBlock,
)
from loom.events import (
    DEFAULT_TTL,
    BusStats,
    Delivery,
    DropReason,
    Envelope,
    Event,
    EventBus,
    Overflow,
    QoS,
    Subscription,
    SubscriptionStats,
    TopicIndex,
    TopicStats,
    agent_reply_topic,
    thread_broadcast_topic,
    thread_reply_topic,
    topic_matches,
    validate_pattern,
    validate_topic,
)
from loom.launch import run
from loom.runtime import Component, Loom, current
from loom.sdk import Agent, Capability, Context, Thread, capability
from loom.tools import ErrorCode, Tool, ToolRegistry, ToolResult, ToolStatus, tool

__all__ = [
    # runtime
    "Component",
    "Loom",
    "current",
    "run",
    # agent SDK (the seed API)
    "Agent",
    "Capability",
    "Context",
    "Thread",
    "capability",
    # agent runtime
    "Action",
    "AgentBehavior",
    "AgentConfig",
    "AgentDirectory",
    "AgentInfo",
    "AgentNotFound",
    "AgentRuntime",
    "AgentState",
    "CapabilityDescriptor",
    "CapabilityDirectory",
    "ManagedAgent",
    "MemoryStateStore",
    "RestartPolicy",
    "SQLiteStateStore",
    "StateStore",
    # tools
    "ErrorCode",
    "Tool",
    "ToolRegistry",
    "ToolResult",
    "ToolStatus",
    "tool",
    # collaboration
    "collab",
    "BarrierResult",
    "CollabTimeout",
    "ContractNetResult",
    "FanoutResult",
    "RequestTimeout",
    "Strategy",
    "barrier",
    "contract_net",
    "fanout_fanin",
    "request_reply",
    # events
    "DEFAULT_TTL",
    "BusStats",
    "Delivery",
    "DropReason",
    "Envelope",
    "Event",
    "EventBus",
    "Overflow",
    "QoS",
    "Subscription",
    "SubscriptionStats",
    "TopicIndex",
    "TopicStats",
    "agent_reply_topic",
    "thread_broadcast_topic",
    "thread_reply_topic",
    "topic_matches",
    "validate_pattern",
    "validate_topic",
    # errors
    "BackpressureTimeout",
    "BrokenError",
    "ClosedError",
    "InvalidEvent",
    "InvalidTopic",
    "LoomError",
    "NoRuntime",
    "NoSubscribers",
    "PayloadError",
    "RuntimeStopped",
    "StopFailed",
    "StreamRefused",
    "SubscriptionClosed",
    "ToolError",
    "UsageError",
    "WouldBlock",
    "__version__",
]

# A library does not configure logging: without this, Python's last-resort handler would print
# every contained agent error to stderr. Errors stay visible as agent.<id>.error events.
_logging.getLogger("loom").addHandler(_logging.NullHandler())

_NOTEBOOK = {
    "AgentInspector",
    "ApprovalPanel",
    "BusInspector",
    "ContextInspector",
    "MetricsView",
    "ReplayPanel",
    "RouterInspector",
    "Topology",
    "TraceTimeline",
}


_LAZY_PACKAGES = {"cognitive", "context"}  # thinking agents: `loom.cognitive.LLMClient` without importing them up front


def __getattr__(name: str) -> object:
    # The inspectors pull in anywidget and ipywidgets: import them only when asked for.
    if name in _NOTEBOOK:
        from loom import notebook

        return getattr(notebook, name)
    if name in _LAZY_PACKAGES:
        import importlib

        return importlib.import_module(f"loom.{name}")
    raise AttributeError(f"module 'loom' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext loom``: register the ``%loom`` magics."""
    from loom.notebook.magics import LoomMagics

    ipython.register_magics(LoomMagics)  # type: ignore[attr-defined]


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext loom``: nothing to undo beyond the magics; the runtime keeps running."""
