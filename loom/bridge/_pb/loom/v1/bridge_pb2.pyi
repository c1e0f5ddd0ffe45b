from loom.bridge._pb.loom.v1 import action_pb2 as _action_pb2
from loom.bridge._pb.loom.v1 import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentRegisterRequest(_message.Message):
    __slots__ = ("agent_id", "subscribed_topics", "capabilities", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_TOPICS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    subscribed_topics: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedCompositeFieldContainer[_action_pb2.CapabilityDescriptor]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, agent_id: _Optional[str] = ..., subscribed_topics: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[_Union[_action_pb2.CapabilityDescriptor, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AgentRegisterResponse(_message.Message):
    __slots__ = ("success", "error_message", "features")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error_message: str
    features: _containers.ScalarMap[str, str]
    def __init__(self, success: _Optional[bool] = ..., error_message: _Optional[str] = ..., features: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ClientEvent(_message.Message):
    __slots__ = ("publish", "ack", "ping", "action_result", "subscribe", "unsubscribe", "publish_batch", "goodbye")
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    ACTION_RESULT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_BATCH_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    publish: Publish
    ack: Ack
    ping: HeartbeatRequest
    action_result: _action_pb2.ActionResult
    subscribe: Subscription
    unsubscribe: Subscription
    publish_batch: PublishBatch
    goodbye: Goodbye
    def __init__(self, publish: _Optional[_Union[Publish, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., ping: _Optional[_Union[HeartbeatRequest, _Mapping]] = ..., action_result: _Optional[_Union[_action_pb2.ActionResult, _Mapping]] = ..., subscribe: _Optional[_Union[Subscription, _Mapping]] = ..., unsubscribe: _Optional[_Union[Subscription, _Mapping]] = ..., publish_batch: _Optional[_Union[PublishBatch, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Publish]
    def __init__(self, items: _Optional[_Iterable[_Union[Publish, _Mapping]]] = ...) -> None: ...

class Publish(_message.Message):
    __slots__ = ("topic", "event", "expect_reply")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    EXPECT_REPLY_FIELD_NUMBER: _ClassVar[int]
    topic: str
    event: _event_pb2.Event
    expect_reply: bool
    def __init__(self, topic: _Optional[str] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., expect_reply: _Optional[bool] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("message_id",)
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    def __init__(self, message_id: _Optional[str] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: str
    def __init__(self, topic: _Optional[str] = ...) -> None: ...

class ServerEvent(_message.Message):
    __slots__ = ("delivery", "pong", "err", "action_call", "delivery_batch")
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    ACTION_CALL_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_BATCH_FIELD_NUMBER: _ClassVar[int]
    delivery: Delivery
    pong: HeartbeatResponse
    err: Error
    action_call: _action_pb2.ActionCall
    delivery_batch: DeliveryBatch
    def __init__(self, delivery: _Optional[_Union[Delivery, _Mapping]] = ..., pong: _Optional[_Union[HeartbeatResponse, _Mapping]] = ..., err: _Optional[_Union[Error, _Mapping]] = ..., action_call: _Optional[_Union[_action_pb2.ActionCall, _Mapping]] = ..., delivery_batch: _Optional[_Union[DeliveryBatch, _Mapping]] = ...) -> None: ...

class DeliveryBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Delivery]
    def __init__(self, items: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("topic", "event", "concrete_topic")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CONCRETE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: str
    event: _event_pb2.Event
    concrete_topic: str
    def __init__(self, topic: _Optional[str] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., concrete_topic: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("timestamp_ms",)
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    def __init__(self, timestamp_ms: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("timestamp_ms", "status")
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    status: str
    def __init__(self, timestamp_ms: _Optional[int] = ..., status: _Optional[str] = ...) -> None: ...

class StreamHello(_message.Message):
    __slots__ = ("token", "server_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    server_id: str
    def __init__(self, token: _Optional[str] = ..., server_id: _Optional[str] = ...) -> None: ...
