"""Agents as actors: behaviors, the AgentRuntime (mailboxes, lifecycle), directories, state."""

from loom.agents.behavior import Action, AgentBehavior, AgentConfig
from loom.agents.directory import AgentDirectory, AgentInfo, CapabilityDescriptor, CapabilityDirectory
from loom.agents.runtime import AgentNotFound, AgentRuntime, ManagedAgent, RestartPolicy
from loom.agents.state import AgentState, MemoryStateStore, PersistentDict, SQLiteStateStore, StateStore

__all__ = [
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
    "PersistentDict",
    "RestartPolicy",
    "SQLiteStateStore",
    "StateStore",
]
