"""Capabilities across the bridge: remote agents' capabilities as tools (server side), an SDK
agent's capabilities as descriptors and answers to ActionCalls, tools of the hub through
ForwardAction (client side), and ToolResult ↔ ActionResult conversion."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loom.bridge._grpc import grpc
from loom.bridge._pb.loom.v1 import action_pb2
from loom.bridge.observed import hop
from loom.errors import ToolError
from loom.events.event import new_event_id
from loom.tools.result import ErrorCode, ToolResult, ToolStatus

if TYPE_CHECKING:
    from loom.bridge.server import BridgeServer
    from loom.sdk.capability import Capability
    from loom.telemetry.seam import Instruments

__all__ = [
    "RemoteTool",
    "action_result_from",
    "answer_action_call",
    "capability_descriptors",
    "forward_action",
    "tool_error_from",
]

_STATUS = {
    ToolStatus.OK: action_pb2.ACTION_OK,
    ToolStatus.ERROR: action_pb2.ACTION_ERROR,
    ToolStatus.TIMEOUT: action_pb2.ACTION_TIMEOUT,
}


def action_result_from(result: ToolResult, call_id: str) -> Any:
    """A ToolResult as the wire's ActionResult (output as JSON bytes)."""
    msg = action_pb2.ActionResult(id=call_id, status=_STATUS[result.status])
    if result.ok:
        if result.output is not None:
            msg.output = (
                result.output if isinstance(result.output, bytes) else json.dumps(result.output, default=str).encode()
            )
    else:
        assert result.error is not None
        msg.error.CopyFrom(
            action_pb2.ActionError(code=result.error.code, message=result.error.message, details=result.error.details)
        )
    return msg


def tool_error_from(msg: Any, tool: str) -> ToolError:
    """The ToolError an ActionResult that is not OK stands for."""
    if msg.status == action_pb2.ACTION_TIMEOUT:
        return ToolError(ErrorCode.ACTION_TIMEOUT, tool, msg.error.message or "the remote agent timed out")
    return ToolError(
        msg.error.code or ErrorCode.CAPABILITY_ERROR,
        tool,
        msg.error.message or "the remote agent failed",
        dict(msg.error.details),
    )


class RemoteTool:
    """A capability a bridged agent declared: invoking it pushes an ActionCall on its stream."""

    provider = "remote"

    def __init__(self, server: BridgeServer, agent_id: str, desc: Any) -> None:
        self.server = server
        self.agent_id = agent_id
        self.name = desc.name
        self.version = desc.version or "1.0"
        md = dict(desc.metadata)
        self.description = md.get("desc") or md.get("description") or f"capability of remote agent {agent_id}"
        schema_text = md.get("input_schema") or md.get("schema") or ""
        try:
            self.schema = json.loads(schema_text) if schema_text else {"type": "object"}
        except ValueError:
            self.schema = {"type": "object"}

    async def execute(self, args: dict[str, Any]) -> Any:
        call = action_pb2.ActionCall(
            id=new_event_id(),
            capability=self.name,
            version=self.version,
            payload=json.dumps(args).encode(),
            correlation_id="",
        )
        call.correlation_id = call.id
        inst = self.server.instruments
        try:
            if inst.tracer is None:
                result = await self.server.push_action_call(self.agent_id, call)
            else:  # the call carries the bridge.forward span's keys: the agent's answer continues the trace
                with hop(inst, "bridge.forward", self.agent_id, None, **{"loom.tool": self.name}) as span:
                    inst.inject(call.headers)  # type: ignore[arg-type] - a protobuf map takes item assignment
                    result = await self.server.push_action_call(self.agent_id, call)
                    _status(span, result)
        except ConnectionError as exc:
            raise ToolError(ErrorCode.PROVIDER_UNAVAILABLE, self.name, str(exc)) from None
        if result.status != action_pb2.ACTION_OK:
            raise tool_error_from(result, self.name)
        if not result.output:
            return None
        try:
            return json.loads(result.output)
        except ValueError:
            return result.output.decode("utf-8", errors="replace")


def capability_descriptors(capabilities: Sequence[Capability]) -> list[Any]:
    """An SDK agent's capabilities as RegisterAgent declares them (description and input schema
    in the metadata, where the bridge's RemoteTool reads them)."""
    return [
        action_pb2.CapabilityDescriptor(
            name=c.name,
            version=c.version,
            provider=action_pb2.PROVIDER_GRPC,
            metadata={"desc": c.description, "input_schema": json.dumps(c.schema)},
        )
        for c in capabilities
    ]


def _status(span: Any, result: Any) -> None:
    if result.status != action_pb2.ACTION_OK:
        span.set("loom.status", result.error.code or action_pb2.ActionStatus.Name(result.status))
        span.fail(f"{result.error.code}: {result.error.message}")
    else:
        span.set("loom.status", "ok")


async def answer_action_call(
    agent_id: str, capabilities: Sequence[Capability], call: Any, instruments: Instruments | None = None
) -> Any:
    """Run the capability an ActionCall names and return its ActionResult: never raises, every
    failure (unknown capability, bad arguments, the capability's own error) is in the result.
    With telemetry on, in a ``bridge.receive`` span continuing the trace keys in the call's headers."""
    if instruments is not None and instruments.tracer is not None:
        with hop(instruments, "bridge.receive", agent_id, call.headers, **{"loom.tool": call.capability}) as span:
            result = await answer_action_call(agent_id, capabilities, call)
            _status(span, result)
            return result
    cap = next((c for c in capabilities if c.name == call.capability), None)
    result = action_pb2.ActionResult(id=call.id, status=action_pb2.ACTION_OK)
    try:
        if cap is None:
            raise ToolError(
                ErrorCode.NOT_FOUND, call.capability, f"agent {agent_id!r} has no capability {call.capability!r}"
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
    return result


async def forward_action(
    stub: Any,
    metadata: Any,
    name: str,
    args: Mapping[str, Any],
    *,
    version: str | None,
    timeout: float | None,
    caller: str,
    instruments: Instruments | None = None,
    trace: Mapping[str, str] | None = None,
) -> ToolResult:
    """Invoke tool ``name`` of the hub through ForwardAction; every failure is in the result. With
    telemetry on, in a ``bridge.send`` span whose keys the call's headers carry (``trace``)."""
    if instruments is not None and instruments.tracer is not None:
        with hop(instruments, "bridge.send", caller, None, **{"loom.tool": name}) as span:
            keys: dict[str, str] = {}
            instruments.inject(keys)
            result = await forward_action(
                stub, metadata, name, args, version=version, timeout=timeout, caller=caller, trace=keys
            )
            span.set("loom.status", "ok" if result.error is None else result.error.code)
            if result.error is not None:
                span.fail(f"{result.error.code}: {result.error.message}")
            return result
    timeout = 30.0 if timeout is None else timeout
    call = action_pb2.ActionCall(
        id=new_event_id(),
        capability=name,
        version=version or "",
        timeout_ms=int(timeout * 1000),
        payload=json.dumps(dict(args)).encode(),
        headers={**trace, "sender": caller} if trace else {"sender": caller},
    )
    call.correlation_id = call.id
    try:
        result = await stub.ForwardAction(call, timeout=timeout + 5, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return ToolResult.failure(call.id, name, ErrorCode.PROVIDER_UNAVAILABLE, f"bridge unreachable: {exc.details()}")
    if result.status != action_pb2.ACTION_OK:
        error = tool_error_from(result, name)
        return ToolResult.failure(call.id, name, error.code, error.message, error.details)
    return ToolResult(
        id=call.id, tool=name, status=ToolStatus.OK, output=json.loads(result.output) if result.output else None
    )
