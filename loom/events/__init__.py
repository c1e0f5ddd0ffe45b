"""Messaging core: Event, Envelope, topics and patterns, the EventBus and its QoS policies."""

from loom.events.bus import EventBus
from loom.events.envelope import (
    DEFAULT_TTL,
    Envelope,
    agent_reply_topic,
    thread_broadcast_topic,
    thread_reply_topic,
)
from loom.events.event import Event, new_event_id
from loom.events.qos import DEFAULT_MAXSIZE, DropReason, Overflow, QoS
from loom.events.stats import BusStats, SubscriptionStats, TopicStats
from loom.events.subscription import Delivery, Subscription
from loom.events.topics import TopicIndex, topic_matches, validate_pattern, validate_topic

__all__ = [
    "DEFAULT_MAXSIZE",
    "DEFAULT_TTL",
    "BusStats",
    "Delivery",
    "DropReason",
    "Envelope",
    "Event",
    "EventBus",
    "Overflow",
    "QoS",
    "Subscription",
    "SubscriptionStats",
    "TopicIndex",
    "TopicStats",
    "agent_reply_topic",
    "new_event_id",
    "thread_broadcast_topic",
    "thread_reply_topic",
    "topic_matches",
    "validate_pattern",
    "validate_topic",
]
