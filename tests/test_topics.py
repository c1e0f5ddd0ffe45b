"""Topics, patterns and the segment-trie index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom import InvalidTopic, TopicIndex, topic_matches, validate_pattern, validate_topic


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("market.price.*", "market.price.BTC", True),
        ("market.price.*", "market.price.BTC.spot", False),
        ("market.price.*", "market.price", False),
        ("market.price.*", "market.volume.BTC", False),
        ("market.>", "market.price.BTC", True),
        ("market.>", "market.price.BTC.spot", True),
        ("market.>", "market", False),
        ("*.price.*", "market.price.ETH", True),
        (">", "a", True),
        (">", "a.b.c", True),
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.b", "a.b", True),
        ("a.b", "a.bc", False),
    ],
)
def test_nats_semantics(pattern, topic, expected):
    assert topic_matches(pattern, topic) is expected
    index: TopicIndex[str] = TopicIndex()
    index.add(pattern, "sub")
    assert (index.match(topic) == ["sub"]) is expected


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "empty"),
        ("a..b", "segment 2 is empty"),
        (".a", "segment 1 is empty"),
        ("a.", "segment 2 is empty"),
        ("a.*", r"wildcard '\*' is not allowed"),
        ("a.>", "wildcard '>' is not allowed"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\u2003b", "whitespace"),
        ("a\x00b", "NUL"),
        ("a.b*", "mixes a wildcard"),
        ("x" * 1025, "longer than 1024"),
    ],
)
def test_bad_topics_name_the_problem(topic, reason):
    with pytest.raises(InvalidTopic, match=reason) as info:
        validate_topic(topic)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [None, 3, b"a.b", ["a"]])
def test_non_str_topics_raise_type_error(value):
    with pytest.raises(TypeError, match="must be str"):
        validate_topic(value)
    with pytest.raises(TypeError, match="must be str"):
        validate_pattern(value)


@pytest.mark.parametrize(("pattern", "reason"), [("a.>.b", "last segment"), ("a.b>", "mixes"), ("a..*", "empty")])
def test_bad_patterns(pattern, reason):
    with pytest.raises(InvalidTopic, match=reason):
        validate_pattern(pattern)


def test_patterns_allow_wildcards():
    assert validate_pattern("a.*.>") == "a.*.>"


def test_index_deduplicates_and_prunes():
    index: TopicIndex[str] = TopicIndex()
    index.add("a.*", "x")
    index.add("a.b", "x")
    index.add("a.>", "x")
    index.add("a.b", "x")  # idempotent
    assert len(index) == 3
    assert index.match("a.b") == ["x"]
    assert sorted(p for p, _ in index.patterns()) == ["a.*", "a.>", "a.b"]
    for p in ("a.*", "a.b", "a.>"):
        assert index.remove(p, "x")
    assert not index.remove("a.b", "x") and len(index) == 0
    assert index._root.empty()


SEGMENTS = st.sampled_from(["a", "b", "c", "price", "BTC"])
TOPICS = st.lists(SEGMENTS, min_size=1, max_size=5).map(".".join)
PATTERN_SEGMENT = st.one_of(SEGMENTS, st.just("*"))
PATTERNS = st.builds(
    lambda segs, tail: ".".join(segs + ([">"] if tail else [])) if segs or tail else "a",
    st.lists(PATTERN_SEGMENT, min_size=0, max_size=4),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(patterns=st.lists(PATTERNS, min_size=0, max_size=30), topics=st.lists(TOPICS, min_size=1, max_size=20))
def test_index_agrees_with_the_reference_matcher(patterns, topics):
    index: TopicIndex[int] = TopicIndex()
    for i, p in enumerate(patterns):
        index.add(p, i)
    for topic in topics:
        expected = {i for i, p in enumerate(patterns) if topic_matches(p, topic)}
        got = index.match(topic)
        assert len(got) == len(set(got))
        assert set(got) == expected


@settings(max_examples=100, deadline=None)
@given(patterns=st.lists(PATTERNS, min_size=1, max_size=20), data=st.data())
def test_index_after_removals_agrees_with_the_reference(patterns, data):
    index: TopicIndex[int] = TopicIndex()
    for i, p in enumerate(patterns):
        index.add(p, i)
    removed = data.draw(st.sets(st.integers(0, len(patterns) - 1)))
    for i in removed:
        index.remove(patterns[i], i)
    topic = data.draw(TOPICS)
    expected = {i for i, p in enumerate(patterns) if i not in removed and topic_matches(p, topic)}
    assert set(index.match(topic)) == expected
