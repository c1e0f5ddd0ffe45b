"""The loom.v1 Bridge gRPC service, served by ``grpc.aio`` on the runtime's own loop.

RegisterAgent stores an agent's topics and capabilities (directory entry, remote tools);
EventStream is Ack-first, then serves the agent's session (:mod:`loom.bridge.session`: its
subscription, echoing the agent's own events when it subscribes to them, as upstream clients
rely on; events held while it reconnects), relays publishes, pings and action results;
ForwardAction goes to the ToolRegistry; Heartbeat echoes. Capabilities of remote agents are
callable tools: an invocation is pushed as an ActionCall on the agent's stream and answered by
its ActionResult. The server is given the runtime's bus, tool registry, directory and spawn
function, nothing more.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from loom.bridge._grpc import TUNED, grpc
from loom.bridge._pb.loom.v1 import action_pb2, bridge_pb2, bridge_pb2_grpc
from loom.bridge.auth import TokenInterceptor
from loom.bridge.connection import Connection
from loom.bridge.framing import ByteCount, FrameError
from loom.bridge.local import LocalStreamServer, is_loopback
from loom.bridge.observed import add_counted_servicer, hop
from loom.bridge.remote import RemoteTool, action_result_from
from loom.bridge.session import Session
from loom.errors import InvalidTopic, RuntimeStopped, StreamRefused, UsageError
from loom.events.qos import DropReason, QoS
from loom.events.topics import validate_pattern, validate_topic

if TYPE_CHECKING:
    from loom.agents.directory import AgentDirectory
    from loom.events.bus import EventBus
    from loom.tools.registry import ToolRegistry

__all__ = ["BridgeServer"]

log = logging.getLogger("loom.bridge")
# Additions to upstream V1 we serve (clients opt in through their registration metadata).
FEATURES = {"batch": "1", "subscribe": "1", "concrete_topic": "1", "deliver_once": "1", "goodbye": "1"}
_QOS = {"realtime": QoS.REALTIME, "batched": QoS.BATCHED, "background": QoS.BACKGROUND}


class BridgeServer:
    """A Bridge gRPC server over one runtime's parts. Start with ``await rt.start_bridge(...)``.

    Args:
        bus / tools / directory: the runtime's event bus, tool registry and agent directory.
        spawn: starts runtime-owned tasks (``Supervisor.spawn``).
        host / port: where to listen (port 0 picks a free one); loopback by default.
        token: when set, every call must carry ``authorization: Bearer <token>``.
        force: allow a non-loopback address without a token (refused otherwise).
        max_message_bytes: the largest message accepted or sent.
        stream_queue: per-agent outbound queue (and the bound of its bus subscription).
        stall_timeout: seconds a client may leave its queue full before the stream is closed.
        ack_timeout: seconds to wait for a new stream's first message (the Ack).
        resume_timeout: seconds an agent's events are kept after its stream ended without a
            goodbye, for its next stream (0: not kept, counted as dropped at once).
        local_stream: also serve the EventStream on a loopback socket for SDK agents on this host
            (:mod:`loom.bridge.local`; advertised in RegisterAgent's features). False: gRPC only.
    """

    name = "bridge"

    def __init__(
        self,
        *,
        bus: EventBus,
        tools: ToolRegistry,
        directory: AgentDirectory,
        spawn: Any,
        host: str = "127.0.0.1",
        port: int = 50051,
        token: str | None = None,
        force: bool = False,
        max_message_bytes: int = 4 * 1024 * 1024,
        stream_queue: int = 1024,
        stall_timeout: float = 30.0,
        ack_timeout: float = 10.0,
        resume_timeout: float = 30.0,
        local_stream: bool = True,
    ) -> None:
        if not is_loopback(host) and not token and not force:
            raise UsageError(
                f"refusing to serve the bridge on {host!r} without a token: anyone who can reach it could "
                "act as an agent. Pass token=..., bind 127.0.0.1, or force=True"
            )
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise UsageError(f"port must be an int in 0..65535, got {port!r}")
        if isinstance(resume_timeout, bool) or not isinstance(resume_timeout, int | float) or resume_timeout < 0:
            raise UsageError(f"resume_timeout must be a number of seconds >= 0, got {resume_timeout!r}")
        self.bus, self.tools, self.directory, self.spawn = bus, tools, directory, spawn
        self.host, self.port = host, port
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.stream_queue = stream_queue
        self.stall_timeout = stall_timeout
        self.ack_timeout = ack_timeout
        self.resume_timeout = resume_timeout
        self.registrations: dict[str, Any] = {}
        self.connections: dict[str, Connection] = {}  # live streams by connection id
        self.by_agent: dict[str, Session] = {}  # sessions (live or parked) by agent id
        self._server: grpc.aio.Server | None = None
        self.local: LocalStreamServer | None = (
            LocalStreamServer(self, host if is_loopback(host) else "127.0.0.1") if local_stream else None
        )
        self.features = dict(FEATURES)
        self.instruments = bus.instruments  # the runtime's: bridge spans and metrics report there
        self.bytes = ByteCount()  # every stream and RPC adds to it (loom.bridge.bytes)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> int:
        """Bind and serve; returns the bound port.

        Raises:
            UsageError: the address cannot be bound (in use, bad host).
        """
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", 0),
        ]
        interceptors = [TokenInterceptor(self.token)] if self.token else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        add_counted_servicer(_Servicer(self), server, self.bytes)
        try:
            bound = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:
            raise UsageError(f"cannot bind the bridge to {self.address}: {exc}") from None
        if not bound:
            raise UsageError(f"cannot bind the bridge to {self.address} (in use?)")
        await server.start()
        self._server, self.port = server, bound
        if self.local is not None:
            try:
                await self.local.start()
                self.features["local_stream"] = self.local.address
                self.features["local_stream_id"] = self.local.server_id
            except OSError as exc:  # gRPC alone still serves everyone
                log.warning("no same-host stream (%s); agents on this host use gRPC", exc)
                self.local = None
        self.instruments.observe("loom.bridge.connections", self._observe_connections, gauge=True)
        self.instruments.observe("loom.bridge.bytes", self.bytes.observe)
        log.info("bridge serving on %s", self.address)
        return bound

    def _observe_connections(self) -> list[tuple[float, dict[str, str]]]:
        return [(len(self.connections), {})]

    async def stop(self, grace: float = 1.0) -> None:
        """Close every stream and session (what they held is counted dropped ``closed``) and the
        port. Idempotent."""
        server, self._server = self._server, None
        self.instruments.forget("loom.bridge.connections", self._observe_connections)
        self.instruments.forget("loom.bridge.bytes", self.bytes.observe)
        for session in list(self.by_agent.values()):
            session.close(DropReason.CLOSED)
        self.features.pop("local_stream", None)
        self.features.pop("local_stream_id", None)
        if self.local is not None:
            await self.local.stop()
        if server is not None:
            await server.stop(grace)

    async def aclose(self) -> None:
        """:meth:`stop` (the runtime calls it at stop)."""
        await self.stop()

    # -- registrations -------------------------------------------------------------------
    def register(self, req: Any) -> tuple[bool, str]:
        agent_id = req.agent_id
        if not agent_id:
            return False, "agent_id cannot be empty"
        try:
            validate_topic(f"agent.{agent_id}.replies")
            if "." in agent_id:
                raise InvalidTopic(agent_id, "an agent id must be one topic segment (no dots)")
            for t in req.subscribed_topics:
                validate_pattern(t)
        except (InvalidTopic, TypeError) as exc:
            return False, str(exc)
        qos = req.metadata.get("qos", "batched").lower()
        if qos not in _QOS:
            return False, f"metadata qos must be one of {sorted(_QOS)}, got {qos!r}"
        self.registrations[agent_id] = req
        from loom.agents.directory import AgentInfo

        caps = tuple(c.name for c in req.capabilities)
        self.directory.register(
            AgentInfo(
                agent_id=agent_id,
                topics=tuple(req.subscribed_topics),
                capabilities=caps,
                metadata=dict(req.metadata),
                location="remote",
                status="active" if agent_id in self.by_agent else "idle",
            )
        )
        owner = f"remote:{agent_id}"
        self.tools.unregister_owner(owner)
        for desc in req.capabilities:
            if desc.name and desc.name not in self.tools:
                self.tools.register(RemoteTool(self, agent_id, desc), provider="remote", owner=owner)
        return True, ""

    def _session_closed(self, session: Session) -> None:
        if self.by_agent.get(session.agent_id) is session:
            del self.by_agent[session.agent_id]

    # -- streams (gRPC EventStream and the same-host stream share this) -----------------
    async def accept_stream(self, messages: Any, peer: str) -> Connection:
        """Wait for the stream's Ack (``ack_timeout``), then attach the stream to the agent's
        session: the one kept since its last stream (a resume; a newer stream replaces a live
        one), or a new one subscribed to the registration's topics.

        Raises:
            StreamRefused: no Ack in time, or the first message is not an Ack with an agent id.
        """
        try:
            async with asyncio.timeout(self.ack_timeout):
                first = await anext(aiter(messages))
        except StopAsyncIteration:
            raise StreamRefused("INVALID_ARGUMENT", "no first message: the stream must start with an Ack") from None
        except TimeoutError:
            raise StreamRefused(
                "INVALID_ARGUMENT",
                f"no Ack within {self.ack_timeout:g}s: the first stream message must be Ack carrying agent_id",
            ) from None
        if first.WhichOneof("msg") != "ack" or not first.ack.message_id:
            raise StreamRefused("INVALID_ARGUMENT", "first stream message must be Ack carrying agent_id")
        agent_id = first.ack.message_id
        reg = self.registrations.get(agent_id)
        md = reg.metadata if reg else {}
        session = self.by_agent.get(agent_id)
        resumed = session is not None
        if session is None:
            session = Session(
                self,
                agent_id,
                qos=_QOS.get(md.get("qos", "batched").lower(), QoS.BATCHED),
                once=md.get("deliver") == "once",
                batch=md.get("batch") == "1",
            )
            self.by_agent[agent_id] = session
        conn = Connection(session, peer=peer)
        self.connections[conn.id] = conn
        session.attach(conn)
        for topic in reg.subscribed_topics if reg else ():  # the patterns it had stay (a resume)
            session.subscribe(topic)
        log.info("agent %s connected (%s, %s)%s", agent_id, conn.id, peer, " resuming its session" if resumed else "")
        return conn

    async def run_stream(self, conn: Connection, messages: Any, write: Any) -> None:
        """Serve an accepted stream until either side ends it: a reader task hands the client's
        messages to the session, this task writes the session's queue with ``write``."""
        reader = self.spawn(self._read(conn, messages), name=f"loom.bridge.read:{conn.agent_id}:{conn.id}")
        try:
            await conn.write_all(write)
        except (ConnectionError, grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            log.info("stream %s of %s broke while writing: %r", conn.id, conn.agent_id, exc)
        finally:
            conn.close(conn.close_reason or "stream ended")
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self.connections.pop(conn.id, None)
            conn.session.detach(conn)

    async def _read(self, conn: Connection, messages: Any) -> None:
        session = conn.session
        try:
            async for msg in messages:
                await session.handle(msg, conn)
        except asyncio.CancelledError:
            raise
        except FrameError as exc:  # the same-host stream: tell the client what was wrong
            conn.close(f"bad stream: {exc}", exc.code)
        except Exception as exc:  # noqa: BLE001 - a broken client ends its own stream only
            log.info("stream of %s ended: %r", conn.agent_id, exc)
        finally:
            conn.close(conn.close_reason or "client closed the stream")

    # -- remote calls --------------------------------------------------------------------
    async def push_action_call(self, agent_id: str, call: Any) -> Any:
        """Send an ActionCall on the agent's live stream and await its ActionResult.

        Raises:
            ConnectionError: the agent has no live stream, or disconnected before answering.
        """
        session = self.by_agent.get(agent_id)
        conn = session.stream if session is not None else None
        if session is None or conn is None or conn.closed.is_set():
            raise ConnectionError(f"agent {agent_id!r} has no live stream")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        session.pending[call.id] = fut
        if not conn.send(bridge_pb2.ServerEvent(action_call=call)):
            session.pending.pop(call.id, None)
            raise ConnectionError(f"agent {agent_id!r} is not reading its stream")
        try:
            return await fut
        finally:
            session.pending.pop(call.id, None)

    def describe(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "token": bool(self.token),
            "connections": [s.describe() for s in self.by_agent.values()],
            "registered": sorted(self.registrations),
            "grpc_tuned": TUNED,
            "local_stream": self.features.get("local_stream"),
        }


class _Servicer(bridge_pb2_grpc.BridgeServicer):
    def __init__(self, server: BridgeServer) -> None:
        self.s = server

    async def RegisterAgent(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method names
        ok, message = self.s.register(request)
        return bridge_pb2.AgentRegisterResponse(success=ok, error_message=message, features=self.s.features)

    async def Heartbeat(self, request: Any, context: Any) -> Any:  # noqa: N802
        return bridge_pb2.HeartbeatResponse(timestamp_ms=request.timestamp_ms, status="ok")

    async def ForwardAction(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            args = json.loads(request.payload) if request.payload else {}
        except ValueError as exc:
            return _action_error(request.id, "INVALID_PARAMS", f"payload is not JSON: {exc}")
        timeout = request.timeout_ms / 1000 if request.timeout_ms > 0 else None
        headers = dict(request.headers)
        caller = headers.get("sender") or headers.get("x-agent-id", "bridge")
        inst = self.s.instruments
        try:
            if inst.tracer is None:
                result = await self._invoke(request, args, timeout, caller)
            else:  # the caller's bridge.send span (its keys in the headers) continues here
                with hop(inst, "bridge.receive", caller, headers, **{"loom.tool": request.capability}):
                    result = await self._invoke(request, args, timeout, caller)
        except RuntimeStopped as exc:
            return _action_error(request.id, "PROVIDER_UNAVAILABLE", str(exc))
        return action_result_from(result, request.id)

    def _invoke(self, request: Any, args: Any, timeout: float | None, caller: str) -> Awaitable[Any]:
        return self.s.tools.invoke(
            request.capability,
            args,
            version=request.version or None,
            timeout=timeout,
            call_id=request.id or None,
            caller=caller,
        )

    async def EventStream(self, request_iterator: Any, context: Any) -> None:  # noqa: N802
        s = self.s
        try:
            conn = await s.accept_stream(request_iterator, context.peer())
        except StreamRefused as exc:
            await context.abort(grpc.StatusCode[exc.code], str(exc))
        await s.run_stream(conn, request_iterator, context.write)
        if conn.close_code:
            await context.abort(grpc.StatusCode[conn.close_code], conn.close_reason)


def _action_error(call_id: str, code: str, message: str) -> Any:
    return action_pb2.ActionResult(
        id=call_id, status=action_pb2.ACTION_ERROR, error=action_pb2.ActionError(code=code, message=message)
    )
