"""The loom.v1 Bridge gRPC service, served by ``grpc.aio`` on the runtime's own loop.

RegisterAgent stores an agent's topics and capabilities (directory entry, remote tools);
EventStream is Ack-first, then subscribes the registered topics for that connection, echoes the
agent's own events when it subscribes to them (upstream clients rely on it), relays publishes,
pings and action results; ForwardAction goes to the ToolRegistry; Heartbeat echoes. Capabilities
of remote agents are callable tools: an invocation is pushed as an ActionCall on the agent's
stream and answered by its ActionResult.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from loom.bridge._grpc import TUNED, grpc
from loom.bridge._pb.loom.v1 import action_pb2, bridge_pb2, bridge_pb2_grpc
from loom.bridge.auth import TokenInterceptor
from loom.bridge.connection import Connection, StreamRefused
from loom.bridge.framing import FrameError
from loom.bridge.local import LocalStreamServer, is_loopback
from loom.bridge.remote import RemoteTool, action_result_from
from loom.errors import InvalidTopic, UsageError
from loom.events.qos import QoS
from loom.events.topics import validate_pattern, validate_topic

if TYPE_CHECKING:
    from loom.runtime import Loom

__all__ = ["BridgeServer"]

log = logging.getLogger("loom.bridge")
FEATURES = {"batch": "1", "subscribe": "1", "concrete_topic": "1"}  # additions to upstream V1 we serve
_QOS = {"realtime": QoS.REALTIME, "batched": QoS.BATCHED, "background": QoS.BACKGROUND}


class BridgeServer:
    """A Bridge gRPC server bound to one runtime. Start with ``await rt.start_bridge(...)``.

    Args:
        host / port: where to listen (port 0 picks a free one); loopback by default.
        token: when set, every call must carry ``authorization: Bearer <token>``.
        force: allow a non-loopback address without a token (refused otherwise).
        max_message_bytes: the largest message accepted or sent.
        stream_queue: per-connection outbound queue (and the bus queue of each of its topics).
        stall_timeout: seconds a client may leave its queue full before the stream is closed.
        ack_timeout: seconds to wait for a new stream's first message (the Ack).
        local_stream: also serve the EventStream on a loopback socket for SDK agents on this host
            (:mod:`loom.bridge.local`; advertised in RegisterAgent's features). False: gRPC only.
    """

    def __init__(
        self,
        rt: Loom,
        host: str = "127.0.0.1",
        port: int = 50051,
        *,
        token: str | None = None,
        force: bool = False,
        max_message_bytes: int = 4 * 1024 * 1024,
        stream_queue: int = 1024,
        stall_timeout: float = 30.0,
        ack_timeout: float = 10.0,
        local_stream: bool = True,
    ) -> None:
        if not is_loopback(host) and not token and not force:
            raise UsageError(
                f"refusing to serve the bridge on {host!r} without a token: anyone who can reach it could "
                "act as an agent. Pass token=..., bind 127.0.0.1, or force=True"
            )
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise UsageError(f"port must be an int in 0..65535, got {port!r}")
        self.rt = rt
        self.host, self.port = host, port
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.stream_queue = stream_queue
        self.stall_timeout = stall_timeout
        self.ack_timeout = ack_timeout
        self.registrations: dict[str, Any] = {}
        self.connections: dict[str, Connection] = {}
        self.by_agent: dict[str, Connection] = {}
        self._server: grpc.aio.Server | None = None
        self.local: LocalStreamServer | None = (
            LocalStreamServer(self, host if is_loopback(host) else "127.0.0.1") if local_stream else None
        )
        self.features = dict(FEATURES)

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
        bridge_pb2_grpc.add_BridgeServicer_to_server(_Servicer(self), server)
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
        log.info("bridge serving on %s", self.address)
        return bound

    async def stop(self, grace: float = 1.0) -> None:
        """Close every stream and the port. Idempotent."""
        server, self._server = self._server, None
        for conn in list(self.connections.values()):
            conn.close("bridge stopped")
        self.features.pop("local_stream", None)
        self.features.pop("local_stream_id", None)
        if self.local is not None:
            await self.local.stop()
        if server is not None:
            await server.stop(grace)

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
        self.rt.directory.register(
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
        self.rt.tools.unregister_owner(owner)
        for desc in req.capabilities:
            if desc.name and desc.name not in self.rt.tools:
                self.rt.tools.register(RemoteTool(self, agent_id, desc), provider="remote", owner=owner)
        return True, ""

    def _connection_closed(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        if self.by_agent.get(conn.agent_id) is conn:  # only if no newer stream replaced it
            del self.by_agent[conn.agent_id]
            self.rt.directory.update(conn.agent_id, status="disconnected")

    # -- streams (gRPC EventStream and the same-host stream share this) -----------------
    async def accept_stream(self, messages: Any, peer: str) -> Connection:
        """Wait for the stream's Ack (``ack_timeout``), then open its connection: subscriptions of
        the agent's registration, directory status active; a newer stream replaces an older one.

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
        qos = _QOS.get(reg.metadata.get("qos", "batched").lower(), QoS.BATCHED) if reg else QoS.BATCHED
        batch = bool(reg) and reg.metadata.get("batch") == "1"
        conn = Connection(self, agent_id, qos=qos, queue=self.stream_queue, peer=peer, batch=batch)
        self.connections[conn.id] = conn
        previous = self.by_agent.get(agent_id)
        self.by_agent[agent_id] = conn
        self.rt.directory.update(agent_id, status="active")
        for topic in reg.subscribed_topics if reg else ():
            conn.subscribe(topic)
        replacing = " replacing an older stream" if previous else ""
        log.info("agent %s connected (%s, %s)%s", agent_id, conn.id, peer, replacing)
        return conn

    async def run_stream(self, conn: Connection, messages: Any, write: Any) -> None:
        """Serve an accepted stream until either side ends it: a reader task handles the client's
        messages, this task writes the connection's queue with ``write``."""
        reader = self.rt.spawn(self._read(conn, messages), name=f"loom.bridge.read:{conn.agent_id}:{conn.id}")
        try:
            await conn.write_all(write)
        finally:
            conn.close(conn.close_reason or "stream ended")
            reader.cancel()

    async def _read(self, conn: Connection, messages: Any) -> None:
        try:
            async for msg in messages:
                await conn.handle(msg)
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
        conn = self.by_agent.get(agent_id)
        if conn is None or conn.closed.is_set():
            raise ConnectionError(f"agent {agent_id!r} has no live stream")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn.pending[call.id] = fut
        if not conn.send(bridge_pb2.ServerEvent(action_call=call)):
            conn.pending.pop(call.id, None)
            raise ConnectionError(f"agent {agent_id!r} is not reading its stream")
        try:
            return await fut
        finally:
            conn.pending.pop(call.id, None)

    def describe(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "token": bool(self.token),
            "connections": [
                {
                    "id": c.id,
                    "agent": c.agent_id,
                    "peer": c.peer,
                    "topics": list(c.subscriptions),
                    "delivered": c.delivered,
                    "received": c.received,
                }
                for c in self.connections.values()
            ],
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
            return action_pb2.ActionResult(
                id=request.id,
                status=action_pb2.ACTION_ERROR,
                error=action_pb2.ActionError(code="INVALID_PARAMS", message=f"payload is not JSON: {exc}"),
            )
        tool = self.s.rt.tools.get(request.capability)
        if (
            tool is not None
            and request.version
            and getattr(tool, "version", request.version) not in (request.version, "")
        ):
            return action_pb2.ActionResult(
                id=request.id,
                status=action_pb2.ACTION_ERROR,
                error=action_pb2.ActionError(
                    code="NOT_FOUND",
                    message=f"{request.capability!r} is offered in version {tool.version!r}, not {request.version!r}",
                ),
            )
        timeout = request.timeout_ms / 1000 if request.timeout_ms > 0 else None
        caller = dict(request.headers).get("sender") or dict(request.headers).get("x-agent-id", "bridge")
        result = await self.s.rt.tools.invoke(
            request.capability, args, timeout=timeout, call_id=request.id or None, caller=caller
        )
        return action_result_from(result, request.id)

    async def EventStream(self, request_iterator: Any, context: Any) -> None:  # noqa: N802
        s = self.s
        try:
            conn = await s.accept_stream(request_iterator, context.peer())
        except StreamRefused as exc:
            await context.abort(grpc.StatusCode[exc.code], str(exc))
        await s.run_stream(conn, request_iterator, context.write)
        if conn.close_code:
            await context.abort(grpc.StatusCode[conn.close_code], conn.close_reason)
