"""Event: the loom.v1.Event record."""

from __future__ import annotations

import pytest

import loom
from loom import Event, InvalidEvent, PayloadError
from loom.bridge._pb.loom.v1 import event_pb2


def test_defaults_give_a_unique_id_timestamp_and_mid_priority():
    e = Event("user.question", b"hi")
    assert len(e.id) == 32 and int(e.id, 16) >= 0
    assert e.timestamp_ms > 1_700_000_000_000
    assert (e.priority, e.confidence, e.source, e.metadata, e.tags) == (50, 1.0, "", {}, [])


def test_ids_are_unique_even_within_one_millisecond():
    ids = {Event("t").id for _ in range(100_000)}
    assert len(ids) == 100_000


def test_json_and_text_constructors_round_trip():
    e = Event.from_json("price", {"sym": "BTC", "usd": 97_000.5, "tags": ["ü"]}, source="feed", priority=70)
    assert e.json() == {"sym": "BTC", "usd": 97_000.5, "tags": ["ü"]}
    assert e.metadata["content_type"] == "application/json" and e.source == "feed" and e.priority == 70
    t = Event.from_text("note", "héllo")
    assert t.text() == "héllo" and t.payload == "héllo".encode()


def test_replace_keeps_id_and_validates():
    e = Event("a", b"1", metadata={"k": "v"})
    r = e.replace(payload=b"2", metadata={"k": "w"})
    assert (r.id, r.payload, r.metadata, e.metadata) == (e.id, b"2", {"k": "w"}, {"k": "v"})
    with pytest.raises(ValueError, match="priority"):
        e.replace(priority=101)


def test_metadata_is_copied_not_aliased():
    md = {"a": "1"}
    e = Event("t", metadata=md)
    md["a"] = "2"
    assert e.metadata == {"a": "1"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"type": ""}, ValueError, "type must not be empty"),
        ({"type": 3}, TypeError, "type must be str"),
        ({"payload": "text"}, TypeError, "payload must be bytes"),
        ({"payload": {"a": 1}}, TypeError, "from_json"),
        ({"priority": 101}, InvalidEvent, "0..100"),
        ({"priority": -1}, InvalidEvent, "0..100"),
        ({"priority": 5.0}, TypeError, "priority must be int"),
        ({"confidence": 1.5}, InvalidEvent, "0.0..1.0"),
        ({"confidence": True}, TypeError, "confidence"),
        ({"metadata": {"n": 1}}, TypeError, "'n' has a int value"),
        ({"metadata": {1: "x"}}, TypeError, "keys must be str"),
        ({"tags": ["ok", 2]}, TypeError, "tags"),
        ({"id": ""}, TypeError, "id"),
        ({"source": None}, TypeError, "source"),
        ({"timestamp_ms": 1.5}, TypeError, "timestamp_ms"),
    ],
)
def test_bad_fields_are_rejected_with_a_clear_message(kwargs, error, match):
    fields = {"type": "t", "payload": b""} | kwargs
    with pytest.raises(error, match=match):
        Event(fields.pop("type"), fields.pop("payload"), **fields)


def test_bytearray_payload_is_accepted_as_bytes():
    assert Event("t", bytearray(b"ab")).payload == b"ab"


def test_non_json_payload_raises_value_error_naming_the_event():
    e = Event("t", b"\xff\xfe")
    with pytest.raises(PayloadError, match=e.id):
        e.json()
    with pytest.raises(PayloadError, match="not UTF-8"):
        e.text()
    with pytest.raises(TypeError, match="JSON-serialisable"):
        Event.from_json("t", {1, 2})


def test_protobuf_round_trip_keeps_every_field():
    e = Event("x.y", b"\x00\x01", source="s", metadata={"thread_id": "t1"}, confidence=0.5, tags=["a"], priority=99)
    msg = e.to_proto()
    assert isinstance(msg, event_pb2.Event)
    wire = msg.SerializeToString()
    back = Event.from_proto(event_pb2.Event.FromString(wire))
    assert back == e


def test_proto_field_numbers_match_upstream_loom_v1():
    fields = {f.name: f.number for f in event_pb2.Event.DESCRIPTOR.fields}
    assert fields == {
        "id": 1,
        "type": 2,
        "timestamp_ms": 3,
        "source": 4,
        "metadata": 5,
        "payload": 6,
        "confidence": 7,
        "tags": 8,
        "priority": 9,
    }
    assert event_pb2.Event.DESCRIPTOR.full_name == "loom.v1.Event"
    assert event_pb2.QoSLevel.Value("QOS_BATCHED") == 1


def test_from_proto_repairs_what_a_peer_may_send():
    msg = event_pb2.Event(priority=500, confidence=-2.0)
    e = Event.from_proto(msg)
    assert (e.type, e.priority, e.confidence) == ("event", 100, 0.0) and len(e.id) == 32
    assert e.timestamp_ms > 0 and e.payload.__class__ is bytes and e.metadata == {} and e.tags == []
    low = Event.from_proto(event_pb2.Event(type="t", priority=-3, confidence=7.5, metadata={"k": "v"}, tags=["a"]))
    assert (low.priority, low.confidence, low.metadata, low.tags) == (0, 1.0, {"k": "v"}, ["a"])
    with pytest.raises(ValueError, match="NaN"):
        Event.from_proto(event_pb2.Event(type="t", confidence=float("nan")))


def test_event_errors_speak_the_one_error_vocabulary():
    """Value errors of events, and a refused bridge stream, are LoomErrors (still ValueErrors
    where they were, so existing handlers keep working)."""
    for exc in (InvalidEvent("x"), PayloadError("x")):
        assert isinstance(exc, loom.LoomError) and isinstance(exc, ValueError)
    with pytest.raises(loom.LoomError):
        Event("")
    refused = loom.StreamRefused("UNAUTHENTICATED", "wrong token")
    assert isinstance(refused, loom.LoomError) and refused.code == "UNAUTHENTICATED"
