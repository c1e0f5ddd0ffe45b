from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QoSLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QOS_REALTIME: _ClassVar[QoSLevel]
    QOS_BATCHED: _ClassVar[QoSLevel]
    QOS_BACKGROUND: _ClassVar[QoSLevel]
QOS_REALTIME: QoSLevel
QOS_BATCHED: QoSLevel
QOS_BACKGROUND: QoSLevel

class Event(_message.Message):
    __slots__ = ("id", "type", "timestamp_ms", "source", "metadata", "payload", "confidence", "tags", "priority")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    timestamp_ms: int
    source: str
    metadata: _containers.ScalarMap[str, str]
    payload: bytes
    confidence: float
    tags: _containers.RepeatedScalarFieldContainer[str]
    priority: int
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., source: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., payload: _Optional[bytes] = ..., confidence: _Optional[float] = ..., tags: _Optional[_Iterable[str]] = ..., priority: _Optional[int] = ...) -> None: ...

class EventStream(_message.Message):
    __slots__ = ("events", "session_id")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    session_id: str
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., session_id: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("topic", "event_types", "qos", "filters")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    qos: QoSLevel
    filters: _containers.ScalarMap[str, str]
    def __init__(self, topic: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ..., qos: _Optional[_Union[QoSLevel, str]] = ..., filters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("subscription_id", "success", "error_message")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    success: bool
    error_message: str
    def __init__(self, subscription_id: _Optional[str] = ..., success: _Optional[bool] = ..., error_message: _Optional[str] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("topic", "event")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    event: Event
    def __init__(self, topic: _Optional[str] = ..., event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("success", "error_message", "sequence_number")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error_message: str
    sequence_number: int
    def __init__(self, success: _Optional[bool] = ..., error_message: _Optional[str] = ..., sequence_number: _Optional[int] = ...) -> None: ...

class UnsubscribeRequest(_message.Message):
    __slots__ = ("subscription_id",)
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    def __init__(self, subscription_id: _Optional[str] = ...) -> None: ...

class UnsubscribeResponse(_message.Message):
    __slots__ = ("success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    def __init__(self, success: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: str
    def __init__(self, topic: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("total_events", "active_subscriptions", "throughput_per_sec", "backlog_size")
    TOTAL_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    total_events: int
    active_subscriptions: int
    throughput_per_sec: float
    backlog_size: int
    def __init__(self, total_events: _Optional[int] = ..., active_subscriptions: _Optional[int] = ..., throughput_per_sec: _Optional[float] = ..., backlog_size: _Optional[int] = ...) -> None: ...
