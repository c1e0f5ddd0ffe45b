"""SQLite-backed records of a runtime: the event log, its recorder, and replay.

``Loom(record="session.db")`` records bus traffic; ``await rt.replay("session.db")`` (or
``loom replay session.db``) re-publishes it into a fresh runtime. See docs/observability.md.
"""

from loom.store.eventlog import SCHEMA_VERSION, EventLog, EventLogError, Record
from loom.store.recorder import Recorder, RecorderStats
from loom.store.replay import ReplayControl, ReplaySummary, replay

__all__ = [
    "SCHEMA_VERSION",
    "EventLog",
    "EventLogError",
    "Record",
    "Recorder",
    "RecorderStats",
    "ReplayControl",
    "ReplaySummary",
    "replay",
]
