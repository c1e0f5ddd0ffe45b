"""What the bridge tells the runtime's :class:`~loom.telemetry.seam.Instruments`: hop spans and metrics.

Spans (telemetry on only; with it off every caller tests ``instruments.tracer is None`` first and
takes its usual path, no frame of ours in between):

- ``bridge.send`` (SDK side): an event leaving for the hub, or a ``ForwardAction`` tool call. Its
  trace keys ride in the event's metadata (the ActionCall's ``headers`` for a tool call), so
- ``bridge.receive`` (hub: a Publish from an agent, a ForwardAction; SDK: an ActionCall) continues
  it; the hub's ``publish`` span and the ``tool.invoke`` it runs are its children.
- ``bridge.forward`` (hub): an event handed to a bridged agent's stream, or an ActionCall pushed to
  it (spanning the wait for its result); what reaches the agent carries this span's keys, so the
  agent's local ``publish`` and then its ``handle`` hang under it.

Attributes: ``loom.agent`` (the bridged agent's bare id), ``loom.topic`` (or ``loom.tool``),
``loom.component`` = ``bridge``.

Metrics, read at collection time from counters the bridge keeps as it goes (:class:`ByteCount`:
one integer add per message, telemetry on or off, so the counter is whole whenever it is read):
``loom.bridge.connections`` (gauge: open agent streams) and ``loom.bridge.bytes`` (counter,
``loom.direction`` in/out: serialized messages as they cross the hub's gRPC service, every RPC,
without gRPC's 5-byte message prefix, HTTP/2 framing or call metadata; on the same-host stream,
every frame with its 4-byte length, the 14-byte preface not included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from loom.bridge._grpc import grpc
from loom.bridge._pb.loom.v1 import action_pb2, bridge_pb2
from loom.bridge.framing import ByteCount

if TYPE_CHECKING:
    from loom.events.event import Event
    from loom.telemetry.seam import Instruments

__all__ = ["add_counted_servicer", "hop", "traced_copy", "traced_publish", "traced_publish_nowait"]


def _counting(parse: Callable[[bytes], Any], serialize: Callable[[Any], bytes], count: ByteCount) -> tuple[Any, Any]:
    # gRPC hands us the bytes anyway: their length is free (no second serialisation, no ByteSize()).
    def deserializer(data: bytes) -> Any:
        count.inbound += len(data)
        return parse(data)

    def serializer(msg: Any) -> bytes:
        data = serialize(msg)
        count.outbound += len(data)
        return data

    return deserializer, serializer


def add_counted_servicer(servicer: Any, server: Any, count: ByteCount) -> None:
    """``bridge_pb2_grpc.add_BridgeServicer_to_server``, with every message's bytes counted."""
    b, a = bridge_pb2, action_pb2
    methods = {
        "RegisterAgent": (grpc.unary_unary_rpc_method_handler, b.AgentRegisterRequest, b.AgentRegisterResponse),
        "EventStream": (grpc.stream_stream_rpc_method_handler, b.ClientEvent, b.ServerEvent),
        "ForwardAction": (grpc.unary_unary_rpc_method_handler, a.ActionCall, a.ActionResult),
        "Heartbeat": (grpc.unary_unary_rpc_method_handler, b.HeartbeatRequest, b.HeartbeatResponse),
    }
    handlers = {}
    for name, (make, request, response) in methods.items():
        de, ser = _counting(request.FromString, response.SerializeToString, count)
        handlers[name] = make(getattr(servicer, name), request_deserializer=de, response_serializer=ser)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("loom.v1.Bridge", handlers),))
    server.add_registered_method_handlers("loom.v1.Bridge", handlers)


# -- spans ---------------------------------------------------------------------------------
def _attrs(agent: str, topic: str, event: Event | None = None, **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"loom.agent": agent, "loom.component": "bridge"}  # the tracer names it bare
    if topic:
        attrs["loom.topic"] = topic
    if event is not None:
        attrs["loom.event.type"] = event.type
        attrs["loom.event.id"] = event.id
    attrs.update(extra)
    return attrs


def _carrying(inst: Instruments, event: Event) -> Event:
    """A copy of ``event`` carrying the current span's trace keys."""
    md = dict(event.metadata)
    inst.inject(md)
    return event._with_metadata(md)


def traced_copy(inst: Instruments, name: str, agent: str, topic: str, event: Event) -> Event:
    """Open and close span ``name`` (parent: the event's keys) and return the event carrying it: an
    instant hop marker (the hub's ``bridge.forward`` of one delivery)."""
    with inst.span(name, _attrs(agent, topic, event), parent=event.metadata):
        return _carrying(inst, event)


@contextmanager
def hop(inst: Instruments, name: str, agent: str, parent: Mapping[str, str] | None, **attrs: Any) -> Iterator[Any]:
    """A bridge span around a block (``parent``: trace keys the block continues, else the current span)."""
    with inst.span(name, _attrs(agent, "", **attrs), parent=parent) as span:
        yield span


def _send_span(inst: Instruments, agent: str, topic: str, event: Event) -> Any:
    """``bridge.send``: under the current span (a handler's emit), else the trace the event carries."""
    tracer = inst.tracer
    in_span = getattr(tracer, "in_span", None)
    parent = None if in_span is not None and in_span() else event.metadata
    return inst.span("bridge.send", _attrs(agent, topic, event), parent=parent)


async def traced_publish(
    inst: Instruments, agent: str, topic: str, event: Event, send: Callable[[Any], Any], expect_reply: bool = False
) -> int:
    """``send(Publish)`` inside a ``bridge.send`` span whose keys the event carries to the hub."""
    with _send_span(inst, agent, topic, event):
        carried = _carrying(inst, event)
        return await send(bridge_pb2.Publish(topic=topic, event=carried.to_proto(), expect_reply=expect_reply))


def traced_publish_nowait(inst: Instruments, agent: str, topic: str, event: Event, put: Callable[[Any], int]) -> int:
    """:func:`traced_publish` for a caller that never waits."""
    with _send_span(inst, agent, topic, event):
        return put(bridge_pb2.Publish(topic=topic, event=_carrying(inst, event).to_proto()))
