"""The notebook layer: magics and live inspector widgets (imported only when used)."""

from loom.notebook.agent_inspector import AgentInspector
from loom.notebook.approval import ApprovalPanel
from loom.notebook.base import Inspector
from loom.notebook.bus_inspector import BusInspector
from loom.notebook.context_inspector import ContextInspector, estimate_tokens
from loom.notebook.metrics_view import MetricsView
from loom.notebook.replay_panel import ReplayPanel
from loom.notebook.router_inspector import RouterInspector
from loom.notebook.sequence import Message, SequenceRecorder
from loom.notebook.status import Pending, RuntimeStatus, status_of
from loom.notebook.topology import Topology
from loom.notebook.trace_timeline import TraceTimeline

__all__ = [
    "AgentInspector",
    "ApprovalPanel",
    "BusInspector",
    "ContextInspector",
    "Inspector",
    "Message",
    "MetricsView",
    "Pending",
    "ReplayPanel",
    "RouterInspector",
    "RuntimeStatus",
    "SequenceRecorder",
    "Topology",
    "TraceTimeline",
    "estimate_tokens",
    "status_of",
]
