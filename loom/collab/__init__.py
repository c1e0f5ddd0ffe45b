"""Collaboration primitives: request/reply, fan-out/fan-in, barrier, contract net.

Module-level functions run in the current runtime (``loom.current()``) as participant
``sender``; inside an agent use the same methods on its ``Context`` (``ctx.request``,
``ctx.fanout``, ``ctx.barrier``, ``ctx.contract_net``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from loom.collab.collaborator import Collaborator, make_event
from loom.collab.contract_net import contract_net as _contract_net
from loom.collab.contract_net import proposal_score
from loom.collab.inbox import ReplyCollector
from loom.collab.strategy import (
    Award,
    BarrierResult,
    CollabTimeout,
    ContractNetResult,
    FanoutResult,
    Proposal,
    RequestTimeout,
    Strategy,
)
from loom.events.event import Event

__all__ = [
    "Award",
    "BarrierResult",
    "CollabTimeout",
    "Collaborator",
    "ContractNetResult",
    "FanoutResult",
    "Proposal",
    "ReplyCollector",
    "RequestTimeout",
    "Strategy",
    "barrier",
    "contract_net",
    "fanout_fanin",
    "make_event",
    "proposal_score",
    "request_reply",
]


def _collab(sender: str, runtime: Any) -> Collaborator:
    from loom.runtime import current

    rt = runtime or current()
    return Collaborator(rt.agents.link, sender)


async def request_reply(
    topic: str,
    payload: Any = None,
    timeout: float = 5.0,
    *,
    sender: str = "collab",
    runtime: Any = None,
    **kw: Any,
) -> Event | None:
    """First correlated reply to a request on ``topic``; ``None`` on timeout (see Collaborator)."""
    return await _collab(sender, runtime).request_reply(topic, payload, timeout=timeout, **kw)


async def fanout_fanin(
    topics: Sequence[str],
    payload: Any = None,
    strategy: Strategy | str | tuple[str, int] = "all",
    timeout: float = 5.0,
    *,
    sender: str = "collab",
    runtime: Any = None,
    **kw: Any,
) -> FanoutResult:
    """One request per topic; replies collected by ``strategy`` (see Collaborator)."""
    return await _collab(sender, runtime).fanout_fanin(topics, payload, strategy=strategy, timeout=timeout, **kw)


async def barrier(
    name: str,
    parties: int | Iterable[str],
    timeout: float = 10.0,
    *,
    participant: str,
    runtime: Any = None,
    **kw: Any,
) -> BarrierResult:
    """Wait for ``parties`` participants at barrier ``name`` (see Collaborator)."""
    return await _collab(participant, runtime).barrier(name, parties, timeout=timeout, participant=participant, **kw)


async def contract_net(
    task: Any,
    participants_topic: str,
    window: float = 1.0,
    max_awards: int = 1,
    score: Callable[[Event], float] = proposal_score,
    *,
    sender: str = "collab",
    runtime: Any = None,
    **kw: Any,
) -> ContractNetResult:
    """One contract-net round (see :mod:`loom.collab.contract_net`)."""
    return await _contract_net(
        _collab(sender, runtime),
        task,
        participants_topic,
        window=window,
        max_awards=max_awards,
        score=score,
        **kw,
    )
