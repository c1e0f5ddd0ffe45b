"""Event ⇄ NATS message: the ``loom.v1.Event`` protobuf as the body, envelope keys as NATS headers.

The body is the bridge's wire format, so any ``loom.v1`` peer can read it. The envelope keys
(thread, correlation, sender, reply_to, hop budget, trace keys) travel in the ``Loom-Envelope``
header, as JSON, so NATS tools (``nats sub --headers``) see a conversation without decoding the
body; they are taken out of the body's metadata, never carried twice. An event without envelope
keys (most bus traffic) has no headers at all: headers cost the client work per message.

The sender's node id rides in the body's metadata as ``loom.origin``: an event that came from the
cluster keeps it, which is how a link knows not to export it again (no echo, no loop).
"""

from __future__ import annotations

import json as _json
from typing import Any

from loom.errors import LoomError
from loom.events.event import Event

__all__ = [
    "BATCH_HEADER",
    "ENVELOPE_HEADER",
    "ENVELOPE_HEADERS",
    "ORIGIN_KEY",
    "NotALoomEvent",
    "batchable",
    "decode",
    "decode_batch",
    "encode",
    "encode_batch",
    "origin_of",
]

ORIGIN_KEY = "loom.origin"
"""Metadata key naming the runtime (node id) an event was first published in."""

ENVELOPE_HEADER = "Loom-Envelope"
"""The header carrying an event's envelope keys (JSON: ``{"thread_id": "...", "hop": "0", ...}``)."""

ENVELOPE_HEADERS = frozenset(
    ("thread_id", "correlation_id", "sender", "reply_to", "ttl", "hop", "ts", "trace_id", "span_id", "trace_flags")
)

BATCH_HEADER = "Loom-Batch"
"""Header of a message whose body is a ``loom.v1.EventStream``: several plain events on one subject."""

_pb: Any = None
_stream_pb: Any = None


def _event_pb() -> Any:
    global _pb, _stream_pb
    if _pb is None:  # the generated module is imported once, on first use (the package imports light)
        from loom.bridge._pb.loom.v1 import event_pb2

        _pb, _stream_pb = event_pb2.Event, event_pb2.EventStream
    return _pb


class NotALoomEvent(LoomError):
    """A message on an imported subject that is not a ``loom.v1.Event`` (counted and skipped)."""


def encode(event: Event, origin: str, envelope_headers: bool = True) -> tuple[bytes, dict[str, str] | None]:
    """``event`` as a NATS body and headers (``None`` when it has no envelope keys). With
    ``envelope_headers=False`` every key stays in the body: no header at all (a little less client
    work per message), but NATS tools see no envelope."""
    md = event.metadata
    header: str | None = None
    body_md: dict[str, str]
    if envelope_headers and md and not ENVELOPE_HEADERS.isdisjoint(md):
        body_md, keys, values = {}, [], []
        for key, value in md.items():
            if key in ENVELOPE_HEADERS:
                keys.append(key)
                values.append(value)
            else:
                body_md[key] = value
        header = _envelope_json(keys, values)
    else:
        body_md = dict(md)
    if ORIGIN_KEY not in body_md:
        body_md[ORIGIN_KEY] = origin
    msg = _event_pb()(
        id=event.id,
        type=event.type,
        timestamp_ms=event.timestamp_ms,
        source=event.source,
        metadata=body_md,
        payload=event.payload,
        confidence=event.confidence,
        tags=event.tags,
        priority=event.priority,
    )
    if header is None:
        return msg.SerializeToString(), None
    return msg.SerializeToString(), {ENVELOPE_HEADER: header}


# One header, the keys as compact JSON: nats-py builds and parses header lines in Python, a regex
# and a character scan per line, so seven lines cost ~20 µs a message and one ~5 µs. JSON escapes
# CR/LF, so any value is safe in it. A conversation's envelope is ids, topics and digits: it is
# written here without the json module when no value needs escaping (~1.4 µs against ~3 µs for
# json.dumps, on each message of a round trip): the text json.dumps(separators=(",", ":")) writes.
def _envelope_json(keys: list[str], values: list[Any]) -> str:
    try:
        text = "".join(values)
    except TypeError:  # not all strings
        text = "\\"
    # json.dumps writes a value as it is unless it holds a quote, a backslash, a control or a non-ASCII
    # character (for ASCII, isprintable() is exactly 0x20..0x7e)
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '{"' + '","'.join(map('":"'.join, zip(keys, values, strict=True))) + '"}'
    return _json.dumps(dict(zip(keys, values, strict=True)), separators=(",", ":"), default=str)


_read_json = _json.JSONDecoder().decode  # json.loads without its per-call argument checks


def _read_envelope(packed: str) -> Any:
    try:
        return _read_json(packed)
    except ValueError:
        raise NotALoomEvent(f"not a Loom envelope header: {packed[:80]!r}") from None


def batchable(event: Event) -> bool:
    """Whether ``event`` may share a message with others: no envelope keys (nothing for headers)."""
    md = event.metadata
    return not md or ENVELOPE_HEADERS.isdisjoint(md)


def encode_batch(events: list[Event], origin: str) -> tuple[bytes, dict[str, str]]:
    """Plain events (see :func:`batchable`) of one subject as one ``loom.v1.EventStream`` message.

    A backlog of small events costs the client one message instead of one per event: the per-message
    work of nats-py (parse, Msg, queue, callback) dominates for small events. Built in place
    (``events.add``): half the cost of building each message and copying it in.
    """
    _event_pb()
    stream = _stream_pb()
    add = stream.events.add
    for e in events:
        m = add(
            id=e.id,
            type=e.type,
            timestamp_ms=e.timestamp_ms,
            source=e.source,
            payload=e.payload,
            confidence=e.confidence,
            tags=e.tags,
            priority=e.priority,
        )
        md = m.metadata
        if e.metadata:
            md.update(e.metadata)
        md[ORIGIN_KEY] = origin
    return stream.SerializeToString(), {BATCH_HEADER: str(len(events))}


def decode_batch(data: bytes) -> list[Event]:
    """The events of a batch message.

    Raises:
        NotALoomEvent: the body is not a ``loom.v1.EventStream`` of events with ids and types.
    """
    _event_pb()
    stream = _stream_pb()
    try:
        stream.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError: not our format
        raise NotALoomEvent(f"not a loom.v1.EventStream: {exc}") from None
    out = []
    for m in stream.events:
        if not m.id or not m.type:
            raise NotALoomEvent("not a loom.v1.EventStream: an event without id or type")
        out.append(_event_of(m))
    return out


def _event_of(m: Any) -> Event:
    """:meth:`Event.from_proto` (values repaired by its rules), its refusal as :class:`NotALoomEvent`."""
    try:
        return Event.from_proto(m)
    except LoomError as exc:
        raise NotALoomEvent(str(exc)) from None


def decode(data: bytes, headers: dict[str, str] | None) -> Event:
    """The event a NATS message carries (envelope headers folded back into its metadata).

    Raises:
        NotALoomEvent: the body is not a ``loom.v1.Event`` with an id and a type.
    """
    m = _event_pb()()
    try:
        m.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends: not our format
        raise NotALoomEvent(f"not a loom.v1.Event: {exc}") from None
    if not m.id or not m.type:  # random bytes may parse as unknown fields; an event has both
        raise NotALoomEvent("not a loom.v1.Event: no id or type")
    event = _event_of(m)
    if headers:
        packed = headers.get(ENVELOPE_HEADER)
        if packed is not None:
            envelope = _read_envelope(packed)
            if isinstance(envelope, dict):
                md = event.metadata
                for key, value in envelope.items():
                    if key in ENVELOPE_HEADERS and isinstance(value, str):
                        md[key] = value
    return event


def origin_of(event: Event) -> str:
    """The node id an event came from (``""``: published in this runtime)."""
    return event.metadata.get(ORIGIN_KEY, "")
