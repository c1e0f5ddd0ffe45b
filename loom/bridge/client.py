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
from loom.bridge.batching import NOTHING, Batcher
from loom.bridge.remote import tool_error_from
from loom.collab.collaborator import Collaborator
from loom.errors import BrokenError, LoomError, ToolError
from loom.events.envelope import Envelope, agent_reply_topic
from loom.events.event import Event, new_event_id
from loom.events.queue import Delivery
from loom.tools.result import ErrorCode

if TYPE_CHECKING:
    from loom.sdk.agent import Agent

__all__ = ["BridgeTransport"]

log = logging.getLogger("loom.bridge.client")
_PREFIXED = ("thread_id", "correlation_id", "reply_to")


class BridgeTransport:
    """Connects one :class:`~loom.Agent` to a bridge at ``address`` (``host:port``)."""

    def __init__(
        self, address: str, *, token: str | None = None, heartbeat_s: float = 15.0, connect_timeout: float = 10.0
    ):
        self.address = address
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
        if envelope is not None and envelope.correlation_id and not self._wlock.locked() and queue.empty():
            # A request or a reply (someone awaits it) on an idle stream: written here and now, not
            # one task hop later by the writer. Plain emits keep to the queue, where they batch.
            async with self._wlock:
                try:
                    await stream.write(bridge_pb2.ClientEvent(publish=msg))
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
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
        caps = [
            action_pb2.CapabilityDescriptor(
                name=c.name,
                version=c.version,
                provider=action_pb2.PROVIDER_GRPC,
                metadata={"desc": c.description, "input_schema": json.dumps(c.schema)},
            )
            for c in agent.capabilities
        ]
        req = bridge_pb2.AgentRegisterRequest(
            agent_id=agent.agent_id,
            subscribed_topics=self._patterns,
            capabilities=caps,
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
        call = self._stub.EventStream(metadata=self._metadata)
        self._stream = call
        self._supervisor.spawn(self._write(call, self._outbound), name=f"loom.bridge.client.write:{agent.agent_id}")
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

    async def _write(self, call: Any, queue: asyncio.Queue[Any]) -> None:
        """The stream's writer: client messages in order; publishes already waiting go out as one
        PublishBatch when the server takes batches. Ends at ``None`` or when the stream breaks
        (the reader sees that and reconnects)."""
        Publish, ClientEvent, PublishBatch = bridge_pb2.Publish, bridge_pb2.ClientEvent, bridge_pb2.PublishBatch  # noqa: N806
        batcher = Batcher(Publish)
        lock = self._wlock

        async def write(msg: Any) -> None:
            async with lock:
                await call.write(msg)

        try:
            while True:
                msg = await queue.get()
                if msg is None:
                    break
                if type(msg) is not Publish:
                    await write(msg)
                    continue
                if not self._batch:
                    await write(ClientEvent(publish=msg))
                    continue
                items, after = batcher.gather(queue, msg)
                await write(
                    ClientEvent(publish=msg)
                    if len(items) == 1
                    else ClientEvent(publish_batch=PublishBatch(items=items))
                )
                if after is None:  # the end of the stream was queued behind the run
                    break
                if after is not NOTHING:
                    await write(after)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            log.debug("bridge stream closed for writing: %r", exc)

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
        finally:
            self.connected.clear()
            if not self._stopping:
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
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    # -- handling ------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        agent = self._agent
        assert agent is not None and self._state is not None
        state = self._state
        while True:
            topic, event = await self._mailbox.get()
            env = Envelope.from_event(event)
            if not env.next_hop():
                continue
            md = dict(event.metadata)
            md["ttl"], md["hop"] = str(env.ttl), str(env.hop)
            event = event._with_metadata(md)
            event._env = env
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
        agent = self._agent
        assert agent is not None
        cap = next((c for c in agent.capabilities if c.name == call.capability), None)
        result = action_pb2.ActionResult(id=call.id, status=action_pb2.ACTION_OK)
        try:
            if cap is None:
                raise ToolError(
                    ErrorCode.NOT_FOUND,
                    call.capability,
                    f"agent {agent.agent_id!r} has no capability {call.capability!r}",
                )
            args = json.loads(call.payload) if call.payload else {}
            output = await cap.execute(cap.validate(args))
            result.output = json.dumps(output, default=str).encode() if output is not None else b""
        except ToolError as exc:
            result.status, result.error.code, result.error.message = action_pb2.ACTION_ERROR, exc.code, exc.message
        except ValueError as exc:
            result.status, result.error.code, result.error.message = action_pb2.ACTION_ERROR, "INVALID_PARAMS", str(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, not raised here
            result.status, result.error.code = action_pb2.ACTION_ERROR, "CAPABILITY_ERROR"
            result.error.message = f"{type(exc).__name__}: {exc}"
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
        envelope.apply_to(md)
        for key in _PREFIXED:
            md[f"loom.{key}"] = md[key]
        md["loom.sender"] = self.sender.removeprefix("agent.")
