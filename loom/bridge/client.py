"""BridgeTransport: an SDK Agent in another process, joined to a runtime through the bridge.

The same handler code as in-process: deliveries are handled one at a time in order (after the
hop rule), replies to the agent's pending requests are taken off the stream before the mailbox,
capabilities answer the server's ActionCalls, ``ctx.tool`` goes through ForwardAction. The
connection re-registers and reopens its stream with backoff (0.5 s doubling to 10 s) when it
breaks, and a unary Heartbeat every 15 s detects a dead server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loom._supervisor import Supervisor
from loom.agents.state import AgentState
from loom.bridge._grpc import grpc
from loom.bridge._pb.loom.v1 import action_pb2, bridge_pb2, bridge_pb2_grpc
from loom.bridge.batching import write_queue
from loom.bridge.local import is_loopback, open_local_stream
from loom.bridge.remote import answer_action_call, capability_descriptors, tool_error_from
from loom.collab.collaborator import Collaborator
from loom.errors import BrokenError, LoomError, ToolError
from loom.events.envelope import Envelope, agent_reply_topic, hop_on
from loom.events.event import Event, new_event_id
from loom.events.queue import Delivery
from loom.tools.result import ErrorCode

if TYPE_CHECKING:
    from loom.sdk.agent import Agent

__all__ = ["BridgeTransport"]

log = logging.getLogger("loom.bridge.client")


class BridgeTransport:
    """Connects one :class:`~loom.Agent` to a bridge at ``address`` (``host:port``).

    When the address is a loopback one and the bridge offers a same-host stream
    (:mod:`loom.bridge.local`), the event stream runs over it; ``local_stream=False`` or
    ``LOOM_BRIDGE_LOCAL=0`` keeps it on gRPC. ``stream_kind`` says which one is in use.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        heartbeat_s: float = 15.0,
        connect_timeout: float = 10.0,
        local_stream: bool | None = None,
        max_message_bytes: int = 4 * 1024 * 1024,
    ):
        self.address = address
        self.local_stream = os.environ.get("LOOM_BRIDGE_LOCAL", "1") != "0" if local_stream is None else local_stream
        self.max_message_bytes = max_message_bytes
        self.stream_kind = ""  # "local" or "grpc" once connected
        self.token = token if token is not None else os.environ.get("LOOM_BRIDGE_TOKEN")
        self.heartbeat_s = heartbeat_s
        self.connect_timeout = connect_timeout
        self._metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        self._supervisor = Supervisor(f"loom.bridge.client[{address}]")
        self._agent: Agent | None = None
        self._state: AgentState | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._outbound: asyncio.Queue[Any] | None = None
        self._stream: Any = None  # the live EventStream call
        self._writer: asyncio.Task[None] | None = None
        self._wlock = asyncio.Lock()  # one write at a time on the stream (the writer or a direct publish)
        self._mailbox: asyncio.Queue[tuple[str, Event]] = asyncio.Queue(maxsize=1000)
        self.pending: dict[str, Any] = {}  # correlation id -> collector.offer
        self._listeners: dict[str, list[asyncio.Queue[Delivery]]] = {}
        self._patterns: list[str] = []
        self._pong: asyncio.Future[None] | None = None
        self._stopping = False
        self.current: Event | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.sender = ""
        self._batch = False

    # -- Transport protocol ----------------------------------------------------------------
    async def attach(self, agent: Agent) -> None:
        self._agent = agent
        self.sender = f"agent.{agent.agent_id}"
        self._state = AgentState(agent.agent_id)
        self._patterns = [agent_reply_topic(agent.agent_id), *agent.topics]
        try:
            await self._connect()
        except BaseException:
            await self._shutdown()
            raise
        self._supervisor.spawn(self._dispatch(), name=f"loom.bridge.client.dispatch:{agent.agent_id}")
        self._supervisor.spawn(self._heartbeat(), name=f"loom.bridge.client.heartbeat:{agent.agent_id}")

    async def detach(self, agent: Agent) -> None:
        self._stopping = True
        await self._shutdown()
        if self._agent is not None:
            await self._agent._on_shutdown()

    async def publish(self, agent: Agent, topic: str, event: Event, envelope: Envelope | None) -> int:
        self._stamp(event, envelope)
        queue, stream = self._outbound, self._stream
        if queue is None or stream is None:
            raise BrokenError("not connected to the bridge")
        msg = bridge_pb2.Publish(topic=topic, event=event.to_proto())
        if msg.ByteSize() > self.max_message_bytes - 1024:
            raise LoomError(f"event {event.id} is {msg.ByteSize()} bytes: over the bridge's message limit")
        if envelope is not None and envelope.correlation_id and not self._wlock.locked() and queue.empty():
            # A request or a reply (someone awaits it) on an idle stream: written here and now, not
            # one task hop later by the writer. Plain emits keep to the queue, where they batch.
            async with self._wlock:
                try:
                    await stream.write(bridge_pb2.ClientEvent(publish=msg))
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, ConnectionError):
                    raise BrokenError("the bridge stream broke: the event was not sent") from None
            return 1
        # Waits for room: a fast publisher is paced by the stream (gRPC flow control), never dropped.
        await queue.put(msg)
        return 1  # the bridge publishes asynchronously: deliveries are not known here

    def collaborator(self, agent: Agent) -> Collaborator:
        from loom.bridge.remote_collab import RemoteCollaborator

        return RemoteCollaborator(self)

    async def invoke(self, name: str, args: Mapping[str, Any], version: str | None, timeout: float) -> Any:
        call = action_pb2.ActionCall(
            id=new_event_id(),
            capability=name,
            version=version or "",
            timeout_ms=int(timeout * 1000),
            payload=json.dumps(dict(args)).encode(),
            headers={"sender": self.sender},
        )
        call.correlation_id = call.id
        try:
            result = await self._stub.ForwardAction(call, timeout=timeout + 5, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise ToolError(ErrorCode.PROVIDER_UNAVAILABLE, name, f"bridge unreachable: {exc.details()}") from None
        if result.status != action_pb2.ACTION_OK:
            raise tool_error_from(result, name)
        return json.loads(result.output) if result.output else None

    def subscribe(self, agent: Agent, pattern: str) -> None:
        from loom.events.topics import validate_pattern

        validate_pattern(pattern)
        if pattern in self._patterns:
            raise LoomError(f"agent {agent.agent_id!r} is already subscribed to {pattern!r}")
        self._patterns.append(pattern)
        self._send(bridge_pb2.ClientEvent(subscribe=bridge_pb2.Subscription(topic=pattern)))

    def unsubscribe(self, agent: Agent, pattern: str) -> None:
        if pattern not in self._patterns or pattern == self._patterns[0]:
            raise LoomError(f"agent {agent.agent_id!r} cannot unsubscribe from {pattern!r}")
        self._patterns.remove(pattern)
        if pattern not in self._listeners:
            self._send(bridge_pb2.ClientEvent(unsubscribe=bridge_pb2.Subscription(topic=pattern)))

    def subscriptions(self, agent: Agent) -> list[str]:
        return list(self._patterns)

    def state(self, agent: Agent) -> AgentState:
        assert self._state is not None
        return self._state

    # -- connection ----------------------------------------------------------------------
    async def _connect(self) -> None:
        agent = self._agent
        assert agent is not None
        self._channel = grpc.aio.insecure_channel(self.address)
        self._stub = bridge_pb2_grpc.BridgeStub(self._channel)
        req = bridge_pb2.AgentRegisterRequest(
            agent_id=agent.agent_id,
            subscribed_topics=self._patterns,
            capabilities=capability_descriptors(agent.capabilities),
            metadata={"sdk": "loom-notebook", "batch": "1"},
        )
        try:
            reply = await self._stub.RegisterAgent(req, timeout=self.connect_timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise BrokenError(f"cannot reach the bridge at {self.address}: {exc.code().name} {exc.details()}") from None
        if not reply.success:
            raise LoomError(f"the bridge refused agent {agent.agent_id!r}: {reply.error_message}")
        self._batch = reply.features.get("batch") == "1"  # an upstream server never advertises it
        self._outbound = asyncio.Queue(maxsize=1024)
        self._outbound.put_nowait(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=agent.agent_id)))  # Ack first
        call = await self._open_stream(reply.features)
        self._stream = call
        if self._writer is not None:
            self._writer.cancel()  # the writer of a stream that broke
        self._writer = self._supervisor.spawn(
            self._write(call, self._outbound), name=f"loom.bridge.client.write:{agent.agent_id}"
        )
        for pattern in self._listeners:  # a reconnect: primitives still listening (registration has the rest)
            self._send(bridge_pb2.ClientEvent(subscribe=bridge_pb2.Subscription(topic=pattern)))
        # Ready when the server has processed the Ack (its subscriptions exist): a ping's pong says so.
        self._pong = asyncio.get_running_loop().create_future()
        self._send(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1)))
        self._supervisor.spawn(self._read(call), name=f"loom.bridge.client.read:{agent.agent_id}")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._pong
        except TimeoutError:
            call.cancel()
            raise BrokenError(f"the bridge at {self.address} did not answer on the stream") from None
        self.connected.set()

    async def _open_stream(self, features: Mapping[str, str]) -> Any:
        """The bridge's same-host stream when it offers one and we reach it on loopback, else gRPC's."""
        local = features.get("local_stream")
        if local and self.local_stream and is_loopback(self.address.rpartition(":")[0]):
            try:
                stream = await open_local_stream(
                    features, self.token, self.max_message_bytes, min(self.connect_timeout, 3)
                )
            except (OSError, TimeoutError, ValueError) as exc:
                log.info("the bridge's same-host stream at %s is not usable (%s): using gRPC", local, exc)
            else:
                self.stream_kind = "local"
                return stream
        self.stream_kind = "grpc"
        return self._stub.EventStream(metadata=self._metadata)

    async def _write(self, call: Any, queue: asyncio.Queue[Any]) -> None:
        """The stream's writer: client messages in order; publishes already waiting go out as one
        PublishBatch when the server takes batches. Ends at ``None`` or when the stream breaks
        (the reader sees that and reconnects)."""
        ClientEvent, PublishBatch = bridge_pb2.ClientEvent, bridge_pb2.PublishBatch  # noqa: N806
        lock = self._wlock

        async def write(msg: Any) -> None:
            async with lock:
                await call.write(msg)

        try:
            await write_queue(
                queue,
                write,
                end=None,
                kind=bridge_pb2.Publish,
                one=lambda p: ClientEvent(publish=p),
                many=(lambda items: ClientEvent(publish_batch=PublishBatch(items=items))) if self._batch else None,
                max_bytes=self.max_message_bytes,
            )
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, ConnectionError) as exc:
            log.info("bridge stream closed for writing: %r", exc)
            call.cancel()  # the reader sees the end and reconnects

    def _send(self, msg: Any) -> None:
        if self._outbound is None:
            raise BrokenError("not connected to the bridge")
        try:
            self._outbound.put_nowait(msg)
        except asyncio.QueueFull:
            raise BrokenError("the bridge is not reading: outbound queue full") from None

    async def _read(self, call: Any) -> None:
        try:
            async for msg in call:
                kind = msg.WhichOneof("msg")
                if kind == "delivery":
                    await self._on_delivery(msg.delivery)
                elif kind == "delivery_batch":
                    for d in msg.delivery_batch.items:
                        await self._on_delivery(d)
                elif kind == "pong":
                    if self._pong is not None and not self._pong.done():
                        self._pong.set_result(None)
                elif kind == "action_call":
                    self._supervisor.spawn(
                        self._answer(msg.action_call), name=f"loom.bridge.client.call:{msg.action_call.id}"
                    )
                elif kind == "err":
                    log.warning("bridge says %s: %s", msg.err.code, msg.err.message)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            log.info("bridge stream ended: %s %s", exc.code().name, exc.details())
        except ConnectionError as exc:  # the same-host stream: reset, cut or garbled
            log.info("bridge stream ended: %s", exc)
        finally:
            call.cancel()  # a same-host stream's server half is gone: later writes must fail, not vanish
            live = call is self._stream and self.connected.is_set()  # one that failed in _connect: its caller retries
            if call is self._stream:
                self.connected.clear()
            if live and not self._stopping:
                self._supervisor.spawn(self._reconnect(), name="loom.bridge.client.reconnect")

    async def _on_delivery(self, d: Any) -> None:
        event = Event.from_proto(d.event)
        topic = d.concrete_topic or d.topic
        for q in self._listeners.get(d.topic, ()):
            if not q.full():
                q.put_nowait(Delivery(topic, event))
        md = event.metadata
        if self.pending:
            cid = md.get("correlation_id") or md.get("loom.correlation_id")
            offer = self.pending.get(cid) if cid else None
            if offer is not None and offer(Delivery(topic, event)):
                return
        if d.topic in self._patterns:
            await self._mailbox.put((topic, event))  # backpressure reaches the bridge through the stream

    async def _reconnect(self) -> None:
        delay = 0.5
        while not self._stopping:
            await asyncio.sleep(delay)
            try:
                if self._channel is not None:
                    await self._channel.close()
                await self._connect()
                self.reconnects += 1
                log.info("reconnected to the bridge at %s", self.address)
                return
            except (LoomError, OSError) as exc:
                log.info("reconnecting to %s failed: %s", self.address, exc)
                delay = min(delay * 2, 10.0)

    async def _heartbeat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_s)
            if not self.connected.is_set():
                continue
            try:
                await self._stub.Heartbeat(bridge_pb2.HeartbeatRequest(), timeout=5, metadata=self._metadata)
            except grpc.aio.AioRpcError:
                if self._outbound is not None:
                    self._outbound.put_nowait(None)  # end the stream: the reader reconnects

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._outbound is not None:
            try:
                self._outbound.put_nowait(None)
            except asyncio.QueueFull:
                pass
        await self._supervisor.aclose()
        if self._stream is not None:
            self._stream.cancel()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    # -- handling ------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        agent = self._agent
        assert agent is not None and self._state is not None
        state = self._state
        while True:
            topic, received = await self._mailbox.get()
            event = hop_on(received)
            if event is None:
                continue
            state.topic = topic
            self.current = event
            try:
                if agent.on_event is not None:
                    result = agent.on_event(agent.ctx, topic, event)
                    if result is not None and hasattr(result, "__await__"):
                        await result
            except Exception:  # noqa: BLE001 - contained, as in-process
                log.exception("agent %s failed on %s (%s)", agent.agent_id, topic, event.type)
            finally:
                self.current = None
                state.touch()

    async def _answer(self, call: Any) -> None:
        assert self._agent is not None
        result = await answer_action_call(self._agent.agent_id, self._agent.capabilities, call)
        try:
            self._send(bridge_pb2.ClientEvent(action_result=result))
        except BrokenError:
            log.info("could not answer action call %s: stream gone", call.id)

    def _stamp(self, event: Event, envelope: Envelope | None) -> None:
        """Write the envelope so both Loom and upstream loom-py read it (bare and ``loom.`` keys)."""
        md = event.metadata
        if envelope is None:
            envelope = Envelope.from_metadata(md, event.id)
            parent = self.current
            if parent is not None and parent._env is not None and "ttl" not in md:
                envelope.ttl, envelope.hop = parent._env.ttl, parent._env.hop
        elif envelope.hop == 0 and self.current is not None and self.current._env is not None:
            envelope.ttl, envelope.hop = self.current._env.ttl, self.current._env.hop
        envelope.sender = self.sender
        envelope.apply_to(md, upstream=True)
