"""Contract net: call for proposals → scored proposals in a window → award → execution → result.

Sequence (all events on the bus; ``X`` = the coordinator's reply inbox)::

    coordinator ──collab.cfp──────────▶ participants_topic          (reply_to = X)
    participant ──collab.proposal────▶ X                           (score in metadata or JSON)
    coordinator ──collab.award───────▶ winner's reply_to            (reply_to = X)
    winner      ──collab.result──────▶ X                           (metadata status=ok|error)
    coordinator ──collab.reject──────▶ every other bidder's reply_to
    coordinator ──collab.summary─────▶ thread.<id>.reply

Ranking is by score (descending), then bidder id, then arrival: ties are deterministic. A
winner that reports an error or stays silent past ``execution_timeout`` is replaced by the next
bidder when ``reaward`` is on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from loom.collab.collaborator import Collaborator, make_event
from loom.collab.inbox import ReplyCollector
from loom.collab.strategy import Award, CollabTimeout, ContractNetResult, Proposal
from loom.collab.traced import traced
from loom.errors import UsageError
from loom.events.envelope import Envelope
from loom.events.event import Event, new_event_id
from loom.events.topics import validate_topic

__all__ = ["contract_net", "proposal_score"]


def proposal_score(event: Event) -> float:
    """Default scoring: metadata ``score``, else a ``score`` field of a JSON object payload, else 0."""
    raw: Any = event.metadata.get("score")
    if raw is None and event.payload[:1] == b"{":
        try:
            raw = json.loads(event.payload).get("score")
        except (ValueError, AttributeError):
            raw = None
    try:
        score = float(raw) if raw is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
    return score if score == score else 0.0  # NaN ranks as 0


@traced("collab.contract_net", lambda c, task, topic, *a, **k: {"loom.topic": topic})
async def contract_net(
    collab: Collaborator,
    task: Any,
    participants_topic: str,
    *,
    window: float = 1.0,
    max_awards: int = 1,
    score: Callable[[Event], float] = proposal_score,
    execution_timeout: float = 5.0,
    expected: int | None = None,
    reaward: bool = True,
    thread_id: str | None = None,
    raise_on_timeout: bool = False,
) -> ContractNetResult:
    """Run one contract-net round. See the module docstring for the message sequence.

    Args:
        task: the CFP payload (bytes, str or JSON-able).
        participants_topic: where bidders listen (a concrete topic).
        window: seconds to collect proposals (ends early when ``expected`` proposals arrived).
        max_awards: how many bidders should execute the task.
        score: proposal → float (higher wins).
        execution_timeout: seconds a winner has to report its result.
        reaward: replace a failed or silent winner by the next-ranked bidder.
    """
    validate_topic(participants_topic)
    for name, value in (("window", window), ("execution_timeout", execution_timeout)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise UsageError(f"{name} must be a positive number of seconds, got {value!r}")
    if max_awards.__class__ is not int or max_awards < 1:
        raise UsageError(f"max_awards must be an int >= 1, got {max_awards!r}")
    if expected is not None and (expected.__class__ is not int or expected < 1):
        raise UsageError(f"expected must be an int >= 1, got {expected!r}")
    thread_id = thread_id or f"cnp-{new_event_id()}"
    start = time.monotonic()
    bids = ReplyCollector(
        {thread_id: participants_topic},
        ("collab.proposal",),
        lambda c: expected is not None and len(c.events) >= expected,
    )
    collectors = [bids]  # discarded from the inbox and unwatched when the round ends, however it ends
    supervisor = collab.link.supervisor
    inbox = collab._inbox(thread_id)
    inbox.add(bids)
    try:
        supervisor.watch(bids, window)  # each wait ends at its deadline, or at once when the runtime stops
        cfp_env = Envelope(thread_id=thread_id, correlation_id=thread_id, reply_to=inbox.reply_to)
        await collab.publish(
            participants_topic, make_event("collab.cfp", task, source=collab.sender, tags=["collab"]), cfp_env
        )
        await bids.wait()
        ranked = _rank(bids.events, score)
        awards: list[Award] = []
        queue = list(ranked)
        while queue and sum(a.status == "ok" for a in awards) < max_awards:
            wanted = max_awards - sum(a.status == "ok" for a in awards)
            batch, queue = queue[:wanted], queue[wanted:]
            awards.extend(await _award(collab, inbox, thread_id, task, batch, execution_timeout, collectors))
            if not reaward:
                break
        awarded = {a.bidder for a in awards}
        rejected = tuple(p.bidder for p in ranked if p.bidder not in awarded)
        for p in ranked:
            if p.bidder in awarded:
                continue
            target, env = _answer(thread_id, f"{thread_id}:reject", p, inbox.reply_to)
            if _usable(target):
                await collab.publish(target, make_event("collab.reject", None, source=collab.sender), env)
    finally:
        for collector in collectors:
            inbox.discard(collector)
            supervisor.unwatch(collector)
    winners = [a for a in awards if a.status == "ok"]
    satisfied = len(winners) == max_awards
    result = ContractNetResult(
        thread_id=thread_id,
        proposals=ranked,
        awards=awards,
        rejected=rejected,
        satisfied=satisfied,
        elapsed_s=time.monotonic() - start,
        winners=winners,
    )
    collab.note(
        thread_id,
        "collab.summary",
        proposals=str(len(ranked)),
        winners=str(len(winners)),
        max_awards=str(max_awards),
    )
    if not satisfied:
        detail = "no proposals" if not ranked else f"{len(winners)} of {max_awards} awards succeeded"
        collab.note(thread_id, "collab.timeout", reason="contract_net_unsatisfied", detail=detail)
        if raise_on_timeout:
            raise CollabTimeout("contract_net", thread_id, detail)
    return result


def _rank(proposals: list[Event], score: Callable[[Event], float]) -> list[Proposal]:
    scored = []
    seen: set[str] = set()
    for i, ev in enumerate(proposals):
        bidder = ev.metadata.get("sender", "") or ev.source or f"anonymous-{i}"
        if bidder in seen:  # one bid per bidder: the first counts
            continue
        seen.add(bidder)
        try:
            s = float(score(ev))
        except Exception:  # noqa: BLE001 - a broken scorer ranks the bid last instead of aborting the round
            s = float("-inf")
        scored.append((-s, bidder, i, Proposal(bidder=bidder, score=s, event=ev)))
    scored.sort(key=lambda t: t[:3])
    return [t[3] for t in scored]


def _answer(thread_id: str, cid: str, proposal: Proposal, reply_to: str) -> tuple[str, Envelope]:
    """Where to send an answer to a bidder (its reply_to, else its agent inbox) and the envelope."""
    target = proposal.event.metadata.get("reply_to") or Envelope.from_event(proposal.event).agent_reply_topic
    return target, Envelope(thread_id=thread_id, correlation_id=cid, reply_to=reply_to)


def _usable(topic: str) -> bool:
    try:
        validate_topic(topic)
    except (TypeError, ValueError):
        return False
    return True


async def _award(
    collab: Collaborator,
    inbox: Any,
    thread_id: str,
    task: Any,
    batch: list[Proposal],
    timeout: float,
    collectors: list[ReplyCollector],
) -> list[Award]:
    cids = {f"{thread_id}:award:{new_event_id()}": p.bidder for p in batch}
    results = ReplyCollector(cids, ("collab.result",), lambda c: c.answered >= len(cids))
    collectors.append(results)
    inbox.add(results)
    collab.link.supervisor.watch(results, timeout)
    for (cid, _), p in zip(cids.items(), batch, strict=True):
        target, env = _answer(thread_id, cid, p, inbox.reply_to)
        if not _usable(target):
            continue  # a bidder without a usable reply address cannot be awarded: it times out
        md = {"award_to": p.bidder, "score": repr(p.score)}
        award = make_event("collab.award", task, source=collab.sender, metadata=md, tags=["collab"])
        await collab.publish(target, award, env)
    await results.wait()
    by_bidder = {label: ev for label, ev in zip(results.labels, results.events, strict=True)}
    awards = []
    for p in batch:
        ev = by_bidder.get(p.bidder)
        if ev is None:
            awards.append(
                Award(bidder=p.bidder, score=p.score, status="timeout", error=f"no result within {timeout:g}s")
            )
        elif ev.metadata.get("status", "ok") == "error":
            awards.append(
                Award(
                    bidder=p.bidder,
                    score=p.score,
                    status="error",
                    result=ev,
                    error=ev.metadata.get("error", ""),
                )
            )
        else:
            awards.append(Award(bidder=p.bidder, score=p.score, status="ok", result=ev))
    return awards
