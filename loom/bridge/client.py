"""BridgeTransport: an SDK Agent in another process, joined to a runtime through the bridge.

The agent runs the same core as an in-process one (:class:`~loom.agents.managed.ManagedAgent`);
this transport is its :class:`~loom.agents.link.Link`. Its subscriptions (the mailbox, a
barrier's listener) live on a bus of this process whose patterns the hub forwards; the hub sends
each event once with its concrete topic and the local bus routes it (:mod:`loom.bridge.inbound`).
Publishes go over the stream, tools through ``ForwardAction``; its capabilities answer ActionCalls.
The stream re-registers and reopens with backoff (0.5 s doubling to 10 s) when it breaks, a
Heartbeat every 15 s detects a dead hub; what is published meanwhile waits in the outbound queue
(bounded) for the next stream, and the hub keeps the agent's events (docs/bridge.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from loom._supervisor import Supervisor
from loom.agents.runtime import AgentRuntime
from loom.bridge._grpc import grpc
from loom.bridge._pb.loom.v1 import bridge_pb2, bridge_pb2_grpc
from loom.bridge.batching import Stale, StreamWriter
from loom.bridge.inbound import Inbound
from loom.bridge.local import is_loopback, open_local_stream
from loom.bridge.outbox import Outbox
from loom.bridge.remote import answer_action_call, capability_descriptors, forward_action
from loom.bridge.sending import Publishing
from loom.errors import BrokenError, LoomError, NoSubscribers
from loom.events.bus import EventBus
from loom.events.event import Event
from loom.sdk.transport import start_agent
from loom.telemetry.seam import Instruments

if TYPE_CHECKING:
    from loom.agents.managed import ManagedAgent
    from loom.events.subscription import Subscription
    from loom.sdk.agent import Agent
    from loom.tools.result import ToolResult

__all__ = ["BridgeTransport"]

log = logging.getLogger("loom.bridge.client")
_END = None  # ends the writer of the current stream
_hub_note = lambda topic: not topic.endswith(".state")  # noqa: E731 - its subscribers are unknown here; no state snapshots


class BridgeTransport(Publishing):
    """Connects one :class:`~loom.Agent` to a bridge at ``address`` (``host:port``).

    When the address is a loopback one and the bridge offers a same-host stream
    (:mod:`loom.bridge.local`), the event stream runs over it; ``local_stream=False`` or
    ``LOOM_BRIDGE_LOCAL=0`` keeps it on gRPC. ``stream_kind`` says which one is in use.
    """

    upstream = True  # write the loom.-prefixed envelope keys too: agents of upstream's SDK read them

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        heartbeat_s: float = 15.0,
        connect_timeout: float = 10.0,
        local_stream: bool | None = None,
        max_message_bytes: int = 4 * 1024 * 1024,
        outbound_size: int = 1024,
        inbound_backlog: int = 4096,
    ):
        self.address = address
        self.local_stream = os.environ.get("LOOM_BRIDGE_LOCAL", "1") != "0" if local_stream is None else local_stream
        self.max_message_bytes = max_message_bytes
        self.stream_kind = ""  # "local" or "grpc" once connected
        self.token = token if token is not None else os.environ.get("LOOM_BRIDGE_TOKEN")
        self.heartbeat_s = heartbeat_s
        self.connect_timeout = connect_timeout
        self._metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        self._supervisor = self.supervisor = Supervisor(f"loom.bridge.client[{address}]")
        self.instruments = Instruments(self.publish_nowait, _hub_note)  # notes go to the hub
        self.bus = EventBus(supervisor=self._supervisor, on_pattern=self._pattern_changed, instruments=self.instruments)
        self.agents = AgentRuntime(self)  # the one agent of this transport, run by the usual core
        self.core: ManagedAgent | None = None
        self.sender = ""
        self._agent: Agent | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        # Kept across reconnects: what is published while the stream is down leaves on the next one.
        self._outbound = Outbox(bridge_pb2.Publish, outbound_size)
        self._inbound: Inbound | None = None
        self.inbound_backlog = inbound_backlog
        self._stream: Any = None  # the live EventStream call (or same-host stream)
        self._writer: asyncio.Task[None] | None = None
        self._writer_idle = False
        self._wlock = asyncio.Lock()  # one write at a time on the stream (the writer or a direct publish)
        self._pong: asyncio.Future[None] | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.dropped: dict[str, int] = {}  # what could not be sent, by reason (never silent)
        self.last_error = ""  # the hub's last err message

    # -- Transport -----------------------------------------------------------------------
    async def attach(self, agent: Agent) -> ManagedAgent:
        self._agent = agent
        self.sender = f"agent.{agent.agent_id}"
        try:
            self.core = core = await start_agent(self.agents, agent)  # its mailbox exists before the hub delivers
            self._inbound = Inbound(self.bus, core._intercept, self._supervisor.spawn, self.inbound_backlog)
            await self._connect()
        except BaseException:
            await self._shutdown(goodbye=False)
            raise
        self._supervisor.spawn(self._heartbeat(), name=f"loom.bridge.client.heartbeat:{agent.agent_id}")
        return core

    async def detach(self, agent: Agent) -> None:  # the core stops (on_shutdown's output still leaves), goodbye
        await self._shutdown(goodbye=True)

    async def _shutdown(self, *, goodbye: bool) -> None:
        self._stopping = True
        await self.agents.aclose()  # on_shutdown runs; requests the agent waits on fail (ClosedError)
        self._supervisor.stop_waiters()  # tool calls and other waits on this link: RuntimeStopped
        writer = self._writer
        if goodbye and writer is not None and not writer.done() and self.connected.is_set():
            try:  # what is queued, then the goodbye, then the end of the stream
                async with asyncio.timeout(2):
                    await self._outbound.put(bridge_pb2.ClientEvent(goodbye=bridge_pb2.Goodbye()))
                    await self._outbound.put(_END)
            except TimeoutError:
                log.info("agent %s: the stream did not take the goodbye in time", self.sender)
            else:
                await asyncio.wait({writer}, timeout=5)  # it ends, or the stream does (not raised here)
        if unsent := sum(1 for m in self._outbound.drain() if isinstance(m, bridge_pb2.Publish)):
            self._count("agent_stopped", unsent)
        await self._supervisor.aclose()
        if self._stream is not None:
            self._stream.cancel()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        await self.bus.aclose()

    # -- Link (publish, send, request, publish_nowait: loom/bridge/sending.py) -------------
    def subscribe(self, patterns: str | Iterable[str], **options: Any) -> Subscription:
        return self.bus.subscribe(patterns, **options)

    def _pattern_changed(self, pattern: str, present: bool) -> None:
        """The local bus gained or lost a pattern: ask the hub to forward it, or to stop."""
        if self._stub is None or self._stopping:
            return  # not registered yet (the registration carries the patterns), or leaving
        msg = bridge_pb2.Subscription(topic=pattern)
        self._send(bridge_pb2.ClientEvent(subscribe=msg) if present else bridge_pb2.ClientEvent(unsubscribe=msg))

    async def invoke(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        version: str | None = None,
        timeout: float | None = None,
        caller: str = "",
    ) -> ToolResult:
        with self._supervisor.guard():
            return await forward_action(
                self._stub,
                self._metadata,
                name,
                args,
                version=version,
                timeout=timeout,
                caller=caller or self.sender,
                instruments=self.instruments,
            )

    # -- connection ----------------------------------------------------------------------
    async def _connect(self) -> None:
        agent = self._agent
        assert agent is not None
        self._channel = grpc.aio.insecure_channel(self.address)
        stub = bridge_pb2_grpc.BridgeStub(self._channel)
        req = bridge_pb2.AgentRegisterRequest(
            agent_id=agent.agent_id,
            subscribed_topics=self.bus.patterns(),
            capabilities=capability_descriptors(agent.capabilities),
            metadata={"sdk": "loom-notebook", "batch": "1", "deliver": "once"},
        )
        try:
            reply = await stub.RegisterAgent(req, timeout=self.connect_timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise BrokenError(f"cannot reach the bridge at {self.address}: {exc.code().name} {exc.details()}") from None
        if not reply.success:
            raise LoomError(f"the bridge refused agent {agent.agent_id!r}: {reply.error_message}")
        if reply.features.get("deliver_once") != "1":
            raise LoomError(
                f"the bridge at {self.address} is not a Loom for Python bridge (no deliver_once feature): "
                "Loom's SDK agents need one; upstream servers serve upstream's SDK"
            )
        self._stub = stub
        batch = reply.features.get("batch") == "1"
        call = await self._open_stream(reply.features)
        # Ack first (then a ping whose pong says the hub took it and serves our patterns), written
        # before the writer drains what waited for this stream.
        await call.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=agent.agent_id)))
        self._pong = asyncio.get_running_loop().create_future()
        await call.write(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1)))
        self._stream = call
        self._writer = self._supervisor.spawn(
            self._write(call, batch), name=f"loom.bridge.client.write:{agent.agent_id}"
        )
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

    async def _write(self, call: Any, batch: bool) -> None:
        """The stream's writer: client messages in order; publishes already waiting go out as one
        PublishBatch when the hub takes batches. Ends at the end marker, or when the stream is no
        longer the current one (what it took goes back for the next stream), or when it breaks
        (the reader sees that and reconnects)."""
        ClientEvent, PublishBatch = bridge_pb2.ClientEvent, bridge_pb2.PublishBatch  # noqa: N806
        lock = self._wlock

        async def write(msg: Any) -> None:
            async with lock:  # a direct send may be writing
                if call is not self._stream:
                    raise Stale
                await call.write(msg)

        writer = StreamWriter(
            self._outbound,
            write,
            end=_END,
            one=lambda p: ClientEvent(publish=p),
            many=(lambda items: ClientEvent(publish_batch=PublishBatch(items=items))) if batch else None,
            max_bytes=self.max_message_bytes,
            idle=self._set_writer_idle,
            stop=lambda: call is not self._stream,
        )
        try:
            await writer.run()
            if call is self._stream:
                await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, ConnectionError) as exc:
            log.info("bridge stream closed for writing: %r", exc)
            if writer.in_flight:  # a failed write most likely did not arrive
                self._count("disconnected", len(writer.in_flight))
            call.cancel()  # the reader sees the end and reconnects

    def _set_writer_idle(self, idle: bool) -> None:
        self._writer_idle = idle

    def _send(self, msg: Any) -> None:
        """Queue a control message (never raises: the bus's pattern bookkeeping calls it)."""
        if not self._outbound.put_control(msg):  # thousands unsent: the hub has not read for long
            self._count("control_full")

    async def _read(self, call: Any) -> None:
        inbound = self._inbound
        assert inbound is not None
        try:
            async for msg in call:
                kind = msg.WhichOneof("msg")
                if kind == "delivery":
                    d = msg.delivery
                    inbound.deliver(d.concrete_topic or d.topic, Event.from_proto(d.event))
                    await inbound.room()
                elif kind == "delivery_batch":
                    for d in msg.delivery_batch.items:
                        inbound.deliver(d.concrete_topic or d.topic, Event.from_proto(d.event))
                    await inbound.room()
                elif kind == "pong":
                    if self._pong is not None and not self._pong.done():
                        self._pong.set_result(None)
                elif kind == "action_call":
                    self._supervisor.spawn(
                        self._answer(msg.action_call), name=f"loom.bridge.client.call:{msg.action_call.id}"
                    )
                elif kind == "err":
                    self._on_error(msg.err)
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
                self._stream = None
                if self._writer is not None and self._writer_idle:
                    self._writer.cancel()  # nothing in hand; otherwise it puts back what it took
            if live and not self._stopping:
                self._supervisor.spawn(self._reconnect(), name="loom.bridge.client.reconnect")

    def _on_error(self, err: Any) -> None:
        details = dict(err.details)
        self.last_error = f"{err.code}: {err.message}"
        if err.code == "NO_SUBSCRIBERS" and self.core is not None:
            cid = details.get("correlation_id", "")
            collector = self.core.pending.get(cid)
            if collector is not None:
                collector.no_route(cid, NoSubscribers(details.get("topic", "?"), " (the bridge's hub says so)"))
            return
        if err.code == "TOO_LARGE" and details.get("topic"):
            # The agent learns which event it missed, on that event's topic, in order with the others.
            notice = Event.from_json("bridge.dropped", {"reason": "too_large", **details}, source="loom.bridge")
            assert self._inbound is not None
            self._inbound.deliver(details["topic"], notice._with_metadata({"reason": "too_large", **details}))
            return
        log.warning("bridge says %s: %s", err.code, err.message)

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
                stream = self._stream
                if stream is not None:
                    stream.cancel()  # the reader sees the end and reconnects

    async def _answer(self, call: Any) -> None:
        agent = self._agent
        assert agent is not None
        result = await answer_action_call(agent.agent_id, agent.capabilities, call, self.instruments)
        self._send(bridge_pb2.ClientEvent(action_result=result))
