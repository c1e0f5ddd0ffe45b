"""Envelope: thread/correlation/routing keys in Event.metadata (upstream §1.2 scenarios)."""

from __future__ import annotations

from loom import DEFAULT_TTL, Envelope, Event, agent_reply_topic, thread_broadcast_topic, thread_reply_topic


def test_new_sets_upstream_defaults():
    env = Envelope.new("t1", "agent.a")
    assert (env.thread_id, env.correlation_id, env.sender) == ("t1", "t1", "agent.a")
    assert (env.reply_to, env.ttl, env.hop) == ("thread.t1.reply", 16, 0)
    assert env.ts > 0


def test_from_metadata_falls_back_to_event_id_and_derived_defaults():
    env = Envelope.from_metadata({}, "evt-9")
    assert (env.thread_id, env.correlation_id, env.reply_to) == ("evt-9", "evt-9", "thread.evt-9.reply")
    assert (env.sender, env.ttl, env.hop, env.trace_id) == ("", DEFAULT_TTL, 0, "")


def test_unparseable_numbers_fall_back_to_defaults():
    env = Envelope.from_metadata({"ttl": "lots", "hop": "-3", "ts": "x"}, "e")
    assert (env.ttl, env.hop) == (16, 0) and env.ts > 0


def test_loom_prefixed_keys_of_loom_py_clients_are_read_and_bare_keys_win():
    md = {
        "loom.thread_id": "T",
        "loom.correlation_id": "C",
        "loom.sender": "py",
        "loom.reply_to": "agent.py.replies",
    }
    env = Envelope.from_metadata(md, "e")
    assert (env.thread_id, env.correlation_id, env.sender, env.reply_to) == (
        "T",
        "C",
        "py",
        "agent.py.replies",
    )
    env2 = Envelope.from_metadata({**md, "thread_id": "bare"}, "e")
    assert env2.thread_id == "bare"
    # loom.ttl_ms is a time budget, not a hop count: never read as ttl
    assert Envelope.from_metadata({"loom.ttl_ms": "5000"}, "e").ttl == DEFAULT_TTL


def test_attach_and_from_event_round_trip_without_touching_the_original():
    original = Event("t", metadata={"other": "x"})
    env = Envelope.new("th", "agent.a")
    env.trace_id, env.span_id, env.trace_flags = "a" * 32, "b" * 16, "01"
    stamped = env.attach(original)
    assert original.metadata == {"other": "x"}
    assert stamped.id == original.id and stamped.metadata["other"] == "x"
    assert Envelope.from_event(stamped) == env


def test_apply_writes_seven_base_keys_and_trace_keys_only_when_set():
    md = Envelope.new("th").to_metadata()
    assert set(md) == {"thread_id", "correlation_id", "sender", "reply_to", "ttl", "hop", "ts"}
    assert md["ttl"] == "16" and md["hop"] == "0"


def test_next_hop_sequence_matches_upstream():
    env = Envelope.new("t", ttl=3)
    seq = []
    for _ in range(4):
        alive = env.next_hop()
        seq.append((alive, env.hop, env.ttl))
    assert seq == [(True, 1, 2), (True, 2, 1), (False, 3, 0), (False, 4, 0)]
    one = Envelope.new("t", ttl=1)
    assert one.next_hop() is False
    two = Envelope.new("t", ttl=2)
    assert two.next_hop() is True and (two.hop, two.ttl) == (1, 1)


def test_topic_helpers():
    env = Envelope.new("42", "agent.planner")
    assert env.broadcast_topic == thread_broadcast_topic("42") == "thread.42.broadcast"
    assert env.reply_topic == thread_reply_topic("42") == "thread.42.reply"
    assert env.agent_reply_topic == agent_reply_topic("planner") == "agent.planner.replies"
    assert Envelope.new("1", "python").agent_reply_topic == ""


def test_copy_is_independent():
    env = Envelope.new("t")
    c = env.copy(sender="agent.b")
    c.next_hop()
    assert (env.sender, env.hop, c.sender, c.hop) == ("", 0, "agent.b", 1)
