"""Who is there: the AgentDirectory (agents, their topics and capabilities) and the
CapabilityDirectory (capabilities by name and version)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from loom.events.topics import TopicIndex, validate_topic

__all__ = ["AgentDirectory", "AgentInfo", "CapabilityDescriptor", "CapabilityDirectory"]

AgentStatus = Literal["active", "idle", "inactive", "disconnected"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentInfo:
    """A directory entry. ``location`` is ``local`` (this process) or ``remote`` (bridged)."""

    agent_id: str
    topics: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    location: Literal["local", "remote"] = "local"
    status: AgentStatus = "active"
    last_heartbeat_ms: int | None = None


class AgentDirectory:
    """Every agent, local or bridged: registered on create, removed on delete.

    ``by_topic`` is pattern-aware: it answers "who would receive an event on this topic?".
    """

    def __init__(self) -> None:
        self._agents: dict[str, AgentInfo] = {}
        self._topics: TopicIndex[str] = TopicIndex()
        self._caps: dict[str, dict[str, None]] = {}

    def register(self, info: AgentInfo) -> None:
        """Insert or replace the entry for ``info.agent_id`` (old index entries are removed)."""
        self.unregister(info.agent_id)
        self._agents[info.agent_id] = info
        for pattern in info.topics:
            self._topics.add(pattern, info.agent_id)
        for cap in info.capabilities:
            self._caps.setdefault(cap, {})[info.agent_id] = None

    def unregister(self, agent_id: str) -> bool:
        info = self._agents.pop(agent_id, None)
        if info is None:
            return False
        for pattern in info.topics:
            self._topics.remove(pattern, agent_id)
        for cap in info.capabilities:
            holders = self._caps.get(cap)
            if holders is not None:
                holders.pop(agent_id, None)
                if not holders:
                    del self._caps[cap]
        return True

    def update(self, agent_id: str, **changes: Any) -> AgentInfo | None:
        """Replace fields of an entry (topics/capabilities re-indexed). ``None`` if unknown."""
        info = self._agents.get(agent_id)
        if info is None:
            return None
        new = replace(info, **changes)
        self.register(new)
        return new

    def heartbeat(self, agent_id: str) -> None:
        if agent_id in self._agents:
            self.update(agent_id, last_heartbeat_ms=time.time_ns() // 1_000_000, status="active")

    def get(self, agent_id: str) -> AgentInfo | None:
        return self._agents.get(agent_id)

    def by_topic(self, topic: str) -> list[AgentInfo]:
        """Agents with a subscription pattern matching the concrete ``topic``."""
        validate_topic(topic)
        return [self._agents[a] for a in sorted(self._topics.match(topic))]

    def by_capability(self, name: str) -> list[AgentInfo]:
        return [self._agents[a] for a in sorted(self._caps.get(name, ()))]

    def all(self) -> list[AgentInfo]:
        return sorted(self._agents.values(), key=lambda i: i.agent_id)

    def __len__(self) -> int:
        return len(self._agents)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents


@dataclass(frozen=True, slots=True, kw_only=True)
class CapabilityDescriptor:
    """A capability: ``provider`` is ``local`` (an agent in this process), ``native``, ``mcp`` or ``remote``."""

    name: str
    version: str
    provider: str = "local"
    agent_id: str = ""
    description: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


class CapabilityDirectory:
    """Capabilities keyed ``name:version``; ``refresh`` replaces the whole snapshot."""

    def __init__(self) -> None:
        self._by_key: dict[str, CapabilityDescriptor] = {}

    def add(self, desc: CapabilityDescriptor) -> None:
        """Add or replace ``name:version``."""
        self._by_key[desc.key] = desc

    def refresh_from(self, registry: Any) -> None:
        """Take a snapshot of a :class:`~loom.tools.ToolRegistry` (the runtime does this on every change)."""
        self.refresh(
            CapabilityDescriptor(
                name=d["name"],
                version=d["version"] or "1.0",
                provider=d["provider"],
                agent_id=d["owner"],
                description=d["description"],
                input_schema=d["schema"],
            )
            for d in registry.list_tools()
        )

    def refresh(self, descriptors: Iterable[CapabilityDescriptor]) -> None:
        """Replace the snapshot."""
        self._by_key = {d.key: d for d in descriptors}

    def list(self) -> list[CapabilityDescriptor]:
        return sorted(self._by_key.values(), key=lambda d: (d.name, d.version))

    def find_by_name(self, name: str) -> list[CapabilityDescriptor]:
        return [d for d in self.list() if d.name == name]

    def get(self, name: str, version: str | None = None) -> CapabilityDescriptor | None:
        """Exact ``name:version``; without a version, the highest version offered."""
        if version:
            return self._by_key.get(f"{name}:{version}")
        found = self.find_by_name(name)
        return max(found, key=lambda d: _version_key(d.version)) if found else None

    def __len__(self) -> int:
        return len(self._by_key)


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in version.split("."))
