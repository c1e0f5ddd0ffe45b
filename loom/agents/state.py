"""Agent state: a persistent JSON-able part saved through a StateStore, and an ephemeral part."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from loom.errors import UsageError

__all__ = ["AgentState", "MemoryStateStore", "PersistentDict", "SQLiteStateStore", "StateStore"]


class PersistentDict(dict[str, Any]):
    """A dict that notes top-level changes. Call :meth:`AgentState.mark_dirty` after nested ones."""

    __slots__ = ("dirty",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dirty = False

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.dirty = True

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.dirty = True

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(*args, **kwargs)
        self.dirty = True

    def pop(self, *args: Any) -> Any:  # type: ignore[override]
        self.dirty = True
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self.dirty = True
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.dirty = True
        return super().setdefault(key, default)

    def clear(self) -> None:
        self.dirty = True
        super().clear()


class AgentState:
    """What a behavior may keep between events.

    Attributes:
        persistent: JSON-able dict, loaded on create and saved after each event that changed it.
        ephemeral: anything; lost when the agent is deleted or the process ends.
        topic: the topic the event being handled arrived on (set by the runtime).
        last_update_ms: when the last event was handled.
    """

    __slots__ = ("agent_id", "ephemeral", "last_update_ms", "persistent", "topic")

    def __init__(self, agent_id: str, persistent: Mapping[str, Any] | None = None) -> None:
        self.agent_id = agent_id
        self.persistent = PersistentDict(persistent or {})
        self.ephemeral: dict[str, Any] = {}
        self.topic = ""
        self.last_update_ms = 0

    def mark_dirty(self) -> None:
        """Note a nested change of ``persistent`` (e.g. ``state.persistent["log"].append(x)``)."""
        self.persistent.dirty = True

    def snapshot(self) -> dict[str, Any]:
        """A JSON-safe view for inspectors."""
        return {
            "agent_id": self.agent_id,
            "persistent": json.loads(json.dumps(self.persistent, default=repr)),
            "ephemeral": {k: repr(v)[:200] for k, v in self.ephemeral.items()},
            "last_update_ms": self.last_update_ms,
        }

    def touch(self) -> None:
        self.last_update_ms = time.time_ns() // 1_000_000

    def __repr__(self) -> str:
        return f"AgentState({self.agent_id!r}, persistent={dict(self.persistent)!r})"


@runtime_checkable
class StateStore(Protocol):
    """Where persistent agent state lives. Values are JSON text."""

    def load(self, agent_id: str) -> dict[str, Any] | None: ...

    def save(self, agent_id: str, state: Mapping[str, Any]) -> None: ...

    def delete(self, agent_id: str) -> None: ...

    def close(self) -> None: ...


def _encode(agent_id: str, state: Mapping[str, Any]) -> str:
    try:
        return json.dumps(state, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"persistent state of agent {agent_id!r} is not JSON-serialisable: {exc}") from exc


class MemoryStateStore:
    """Keeps JSON copies in a dict (state is isolated from the live objects, as on disk)."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}

    def load(self, agent_id: str) -> dict[str, Any] | None:
        raw = self._data.get(agent_id)
        return None if raw is None else json.loads(raw)

    def save(self, agent_id: str, state: Mapping[str, Any]) -> None:
        self._data[agent_id] = _encode(agent_id, state)

    def delete(self, agent_id: str) -> None:
        self._data.pop(agent_id, None)

    def close(self) -> None:
        pass


class SQLiteStateStore:
    """One SQLite file (WAL mode); one row per agent. Survives restarts of the kernel."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS agent_state "
            "(agent_id TEXT PRIMARY KEY, state TEXT NOT NULL, updated_ms INTEGER)"
        )

    def load(self, agent_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT state FROM agent_state WHERE agent_id = ?", (agent_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def save(self, agent_id: str, state: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO agent_state (agent_id, state, updated_ms) VALUES (?, ?, ?) "
            "ON CONFLICT(agent_id) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
            (agent_id, _encode(agent_id, state), time.time_ns() // 1_000_000),
        )

    def delete(self, agent_id: str) -> None:
        self._db.execute("DELETE FROM agent_state WHERE agent_id = ?", (agent_id,))

    def close(self) -> None:
        self._db.close()
