from loom.bridge._pb.loom.v1 import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_NATIVE: _ClassVar[ProviderKind]
    PROVIDER_WASM: _ClassVar[ProviderKind]
    PROVIDER_GRPC: _ClassVar[ProviderKind]
    PROVIDER_MCP: _ClassVar[ProviderKind]

class ActionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_OK: _ClassVar[ActionStatus]
    ACTION_ERROR: _ClassVar[ActionStatus]
    ACTION_TIMEOUT: _ClassVar[ActionStatus]
    ACTION_RETRYABLE: _ClassVar[ActionStatus]
PROVIDER_NATIVE: ProviderKind
PROVIDER_WASM: ProviderKind
PROVIDER_GRPC: ProviderKind
PROVIDER_MCP: ProviderKind
ACTION_OK: ActionStatus
ACTION_ERROR: ActionStatus
ACTION_TIMEOUT: ActionStatus
ACTION_RETRYABLE: ActionStatus

class CapabilityDescriptor(_message.Message):
    __slots__ = ("name", "version", "provider", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    provider: ProviderKind
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., provider: _Optional[_Union[ProviderKind, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ActionCall(_message.Message):
    __slots__ = ("id", "capability", "version", "payload", "headers", "timeout_ms", "correlation_id", "qos")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    id: str
    capability: str
    version: str
    payload: bytes
    headers: _containers.ScalarMap[str, str]
    timeout_ms: int
    correlation_id: str
    qos: _event_pb2.QoSLevel
    def __init__(self, id: _Optional[str] = ..., capability: _Optional[str] = ..., version: _Optional[str] = ..., payload: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ..., correlation_id: _Optional[str] = ..., qos: _Optional[_Union[_event_pb2.QoSLevel, str]] = ...) -> None: ...

class ActionError(_message.Message):
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

class ActionResult(_message.Message):
    __slots__ = ("id", "status", "output", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: ActionStatus
    output: bytes
    error: ActionError
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[ActionStatus, str]] = ..., output: _Optional[bytes] = ..., error: _Optional[_Union[ActionError, _Mapping]] = ...) -> None: ...
