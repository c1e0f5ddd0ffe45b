"""The Event record: what travels on the bus.

Field for field the protobuf ``loom.v1.Event`` (proto/loom/v1/event.proto), so events cross the
bridge without translation. Events are shared between subscribers and must be treated as
immutable: derive a changed copy with :meth:`Event.replace`.
"""

from __future__ import annotations

import itertools
import json as _json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from loom.errors import InvalidEvent, PayloadError

__all__ = ["Event", "new_event_id"]

_id_counter = itertools.count()
_id_prefix = ""


def _reset_id_prefix() -> None:
    # A random per-process prefix plus a counter: unique like uuid4 (the prefix is 80 random
    # bits) at a fraction of uuid4's cost. Reset in forked children so they never share ids.
    global _id_prefix, _id_counter
    _id_prefix = uuid.uuid4().hex[:20]
    _id_counter = itertools.count()


_reset_id_prefix()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_id_prefix)


def new_event_id() -> str:
    """A process-unique, globally-unlikely-to-collide id: 32 hex characters, uuid4-based."""
    return f"{_id_prefix}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"


def _check(type: object, payload: object, priority: object, confidence: object, source: object) -> tuple[bytes, float]:
    """Slow path of Event validation: coerce what may be coerced, else raise naming the field."""
    if type.__class__ is not str:
        raise TypeError(f"Event.type must be str, got {type.__class__.__name__}")
    if not type:
        raise InvalidEvent("Event.type must not be empty")
    if payload.__class__ is not bytes:
        if isinstance(payload, bytearray | memoryview):
            payload = bytes(payload)
        else:
            raise TypeError(
                f"Event.payload must be bytes, got {payload.__class__.__name__}; "
                "use Event.from_json() or Event.from_text() for other payloads"
            )
    if priority.__class__ is not int:
        raise TypeError(f"Event.priority must be int, got {priority.__class__.__name__}")
    if not 0 <= priority <= 100:  # type: ignore[operator]
        raise InvalidEvent(f"Event.priority must be within 0..100, got {priority}")
    if not isinstance(confidence, float | int) or isinstance(confidence, bool):
        raise TypeError(f"Event.confidence must be a float, got {confidence.__class__.__name__}")
    if not 0.0 <= confidence <= 1.0:
        raise InvalidEvent(f"Event.confidence must be within 0.0..1.0, got {confidence}")
    if source.__class__ is not str:
        raise TypeError(f"Event.source must be str, got {source.__class__.__name__}")
    return payload, float(confidence)  # type: ignore[return-value]


def _bad_metadata(key: object, value: object) -> None:
    if key.__class__ is not str:
        raise TypeError(f"Event.metadata keys must be str, got {key!r}")
    raise TypeError(f"Event.metadata must map str to str; key {key!r} has a {value.__class__.__name__} value {value!r}")


class Event:
    """One event. Mirrors ``loom.v1.Event`` (fields 1–9).

    Args:
        type: event type, e.g. ``"user.question"`` (non-empty str).
        payload: opaque body, ``bytes`` (use :meth:`from_json` / :meth:`from_text` for others).
        source: producer label, e.g. ``"agent.planner"``.
        metadata: ``str`` → ``str`` map; carries the envelope keys.
        id: unique id; generated when omitted.
        timestamp_ms: creation time in ms since the epoch; now when omitted.
        confidence: 0.0–1.0.
        tags: labels.
        priority: 0 (lowest) … 100 (highest).

    Raises:
        TypeError: a field has the wrong type (e.g. a non-str metadata value, str payload).
        InvalidEvent: a value is out of range (priority, confidence) or ``type`` is empty (a LoomError and ValueError).
    """

    __slots__ = (
        "_env",
        "confidence",
        "id",
        "metadata",
        "payload",
        "priority",
        "source",
        "tags",
        "timestamp_ms",
        "type",
    )
    FIELDS = ("id", "type", "timestamp_ms", "source", "metadata", "payload", "confidence", "tags", "priority")
    """The protobuf fields, in field-number order."""

    def __init__(
        self,
        type: str,
        payload: bytes = b"",
        *,
        source: str = "",
        metadata: Mapping[str, str] | None = None,
        id: str | None = None,
        timestamp_ms: int | None = None,
        confidence: float = 1.0,
        tags: Iterable[str] = (),
        priority: int = 50,
    ) -> None:
        # Fast path: one cheap test per field; the slow path (_check) explains what is wrong.
        if (
            type.__class__ is not str
            or not type
            or payload.__class__ is not bytes
            or priority.__class__ is not int
            or not 0 <= priority <= 100
            or confidence.__class__ is not float
            or not 0.0 <= confidence <= 1.0
            or source.__class__ is not str
        ):
            payload, confidence = _check(type, payload, priority, confidence, source)
        if metadata:
            metadata = dict(metadata)
            for k, v in metadata.items():
                if k.__class__ is not str or v.__class__ is not str:
                    _bad_metadata(k, v)
        else:
            metadata = {}
        if tags:
            tags = list(tags)
            for t in tags:
                if t.__class__ is not str:
                    raise TypeError(f"Event.tags must be strings, got {t!r}")
        else:
            tags = []
        if id is None:
            id = f"{_id_prefix}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"
        elif id.__class__ is not str or not id:
            raise TypeError(f"Event.id must be a non-empty str, got {id!r}")
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        elif timestamp_ms.__class__ is not int:
            raise TypeError(f"Event.timestamp_ms must be int, got {timestamp_ms.__class__.__name__}")
        self.id = id
        self.type = type
        self.timestamp_ms = timestamp_ms
        self.source = source
        self.metadata: dict[str, str] = metadata
        self.payload = payload
        self.confidence = confidence
        self.tags: list[str] = tags
        self.priority = priority
        self._env = None  # the parsed Envelope, cached by the agent runtime for the handled event

    # -- constructors --------------------------------------------------------------------
    @classmethod
    def from_json(cls, type: str, obj: Any, **fields: Any) -> Event:
        """An event whose payload is ``obj`` encoded as compact UTF-8 JSON.

        Raises:
            TypeError: ``obj`` is not JSON-serialisable.
        """
        try:
            payload = _json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"payload is not JSON-serialisable: {exc}") from exc
        md = dict(fields.pop("metadata", None) or {})
        md.setdefault("content_type", "application/json")
        return cls(type, payload, metadata=md, **fields)

    @classmethod
    def from_text(cls, type: str, text: str, **fields: Any) -> Event:
        """An event whose payload is ``text`` encoded as UTF-8."""
        if text.__class__ is not str:
            raise TypeError(f"text must be str, got {text.__class__.__name__}")
        md = dict(fields.pop("metadata", None) or {})
        md.setdefault("content_type", "text/plain")
        return cls(type, text.encode(), metadata=md, **fields)

    # -- accessors -----------------------------------------------------------------------
    def json(self) -> Any:
        """The payload decoded as JSON.

        Raises:
            PayloadError: the payload is not valid UTF-8 JSON (the message says which event; a ValueError).
        """
        try:
            return _json.loads(self.payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PayloadError(f"payload of event {self.id} ({self.type}) is not JSON: {exc}") from exc

    def text(self) -> str:
        """The payload decoded as UTF-8.

        Raises:
            PayloadError: the payload is not valid UTF-8 (a ValueError).
        """
        try:
            return self.payload.decode()
        except UnicodeDecodeError as exc:
            raise PayloadError(f"payload of event {self.id} ({self.type}) is not UTF-8: {exc}") from exc

    def replace(self, **changes: Any) -> Event:
        """A copy with ``changes`` applied (validated like the constructor). ``id`` is kept."""
        fields = {name: getattr(self, name) for name in self.FIELDS}
        fields.update(changes)
        return Event(fields.pop("type"), fields.pop("payload"), **fields)

    def _with_metadata(self, metadata: dict[str, str]) -> Event:
        """A copy carrying ``metadata`` (already str → str), skipping validation: runtime hot path."""
        new = object.__new__(Event)
        new.id = self.id
        new.type = self.type
        new.timestamp_ms = self.timestamp_ms
        new.source = self.source
        new.metadata = metadata
        new.payload = self.payload
        new.confidence = self.confidence
        new.tags = self.tags
        new.priority = self.priority
        new._env = None
        return new

    # -- protobuf ------------------------------------------------------------------------
    def to_proto(self) -> Any:
        """This event as a ``loom.v1.Event`` protobuf message."""
        from loom.bridge._pb.loom.v1 import event_pb2

        return event_pb2.Event(
            id=self.id,
            type=self.type,
            timestamp_ms=self.timestamp_ms,
            source=self.source,
            metadata=self.metadata,
            payload=self.payload,
            confidence=self.confidence,
            tags=self.tags,
            priority=self.priority,
        )

    @classmethod
    def from_proto(cls, msg: Any) -> Event:
        """Build an event from a ``loom.v1.Event`` message.

        Protobuf already typed every field, so only values are repaired, because peers may send
        anything: an empty ``id`` or ``type`` (proto3 defaults) gets a fresh id / type ``"event"``,
        a zero timestamp becomes now, priority is clamped into 0..100 and confidence into 0..1.

        Raises:
            InvalidEvent: confidence is NaN (a LoomError and ValueError).
        """
        self = cls.__new__(cls)
        self.id = msg.id or f"{_id_prefix}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"
        self.type = msg.type or "event"
        self.timestamp_ms = msg.timestamp_ms or time.time_ns() // 1_000_000
        self.source = msg.source
        md = msg.metadata
        self.metadata = {k: md[k] for k in md}  # half the cost of dict() over a protobuf map
        self.payload = msg.payload
        confidence = msg.confidence
        if not 0.0 <= confidence <= 1.0:
            if confidence != confidence:
                raise InvalidEvent("Event.confidence is NaN")
            confidence = 0.0 if confidence < 0.0 else 1.0
        self.confidence = confidence
        self.tags = list(msg.tags)
        priority = msg.priority
        self.priority = priority if 0 <= priority <= 100 else (0 if priority < 0 else 100)
        self._env = None
        return self

    # -- dunder --------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable containers inside

    def __repr__(self) -> str:
        preview = self.payload[:40]
        more = "…" if len(self.payload) > 40 else ""
        return f"Event(type={self.type!r}, id={self.id!r}, source={self.source!r}, payload={preview!r}{more})"
