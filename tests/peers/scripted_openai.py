"""A scripted OpenAI-compatible HTTP server (stdlib only) for tests, notebooks and benchmarks.

The real ``openai`` client talks real HTTP to it on 127.0.0.1 (``openai`` 3.x goes through
``httpx2``, which no mocking library intercepts). Each ``POST /v1/chat/completions`` pops the next
scripted reply; when the script is empty, ``responder(request_body)`` chooses one (a policy: "if
the last message is a tool result, answer; else call a tool"). Streams are SSE the way OpenAI,
vLLM and llama.cpp send them (role chunk, content in word fragments, tool-call arguments in
fragments keyed by ``index``, ``finish_reason``, a usage chunk when asked, ``[DONE]``), over a
chunked body. Per-reply quirks reproduce what real servers do wrong::

    srv = ScriptedOpenAI([text("hello"), tool_call("get_time", {"tz": "UTC"}, repeat_name=True)])
    with srv:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="x")
        ...
    srv.requests        # every request body, in order
    srv.aborted_streams # answers the client walked away from (cancellation closed the socket)
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

__all__ = ["Reply", "ScriptedOpenAI", "error", "text", "tool_call", "tool_calls"]

Responder = Callable[[dict[str, Any]], "Reply"]


@dataclass(slots=True, kw_only=True)
class Reply:
    """One scripted answer, and how badly to deliver it.

    Quirks: ``repeat_name`` puts the function name in every tool-call delta (llama.cpp);
    ``usage=None`` reports no token counts; ``drop="end"`` ends the stream cleanly but before its
    ``finish_reason`` and ``[DONE]``; ``drop="cut"`` closes the socket mid-body. Either happens
    ``drop_after`` chunks in (default: just before the finish chunk; ``drop_after`` alone means
    "end"). ``hang`` stops at the same point (unstreamed: before answering) and waits until the
    client leaves; ``delay`` waits before answering, ``chunk_delay`` before each chunk.
    """

    content: str | None = None
    calls: list[dict[str, str]] = field(default_factory=list)
    """``{"id", "name", "arguments"}``, arguments as the raw text the model "wrote"."""
    finish_reason: str = "stop"
    status: int = 200
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    usage: tuple[int, int] | None = (12, 5)
    repeat_name: bool = False
    drop: Literal["end", "cut"] | None = None
    drop_after: int | None = None
    hang: bool = False
    delay: float = 0.0
    chunk_delay: float = 0.0


def text(content: str, *, finish_reason: str = "stop", **quirks: Any) -> Reply:
    """A plain answer."""
    return Reply(content=content, finish_reason=finish_reason, **quirks)


def tool_calls(
    calls: Sequence[tuple[str, Mapping[str, Any] | str]], *, content: str | None = None, **quirks: Any
) -> Reply:
    """Several calls in one answer (parallel tool calls). A ``str`` argument is sent as-is (malformed JSON)."""
    parts = [
        {
            "id": f"call_{uuid.uuid4().hex[:8]}",
            "name": name,
            "arguments": args if isinstance(args, str) else json.dumps(args),
        }
        for name, args in calls
    ]
    return Reply(content=content, calls=parts, finish_reason="tool_calls", **quirks)


def tool_call(name: str, arguments: Mapping[str, Any] | str, **quirks: Any) -> Reply:
    """One function call (any name: an unknown tool is just a name the client passes on)."""
    return tool_calls([(name, arguments)], **quirks)


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    """An HTTP error with OpenAI's error body, e.g. ``error(429, "slow down", {"Retry-After": "1"})``."""
    return Reply(status=status, message=message, headers=dict(headers or {}))


class _ClientLeft(Exception):
    """The client closed the connection before the answer was complete."""


class _Server(ThreadingHTTPServer):
    """Tracks each connection so stop() can wake every handler blocked on a keep-alive socket."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.conns: set[socket.socket] = set()
        self.workers: list[threading.Thread] = []
        self.guard = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.guard:
            self.conns.add(request)
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with self.guard:
            self.workers = [w for w in self.workers if w.is_alive()] + [t]
        t.start()

    def shutdown_request(self, request: Any) -> None:
        with self.guard:
            self.conns.discard(request)
        super().shutdown_request(request)


class ScriptedOpenAI:
    """The server. ``start()``/``stop()`` or ``with``; ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        script: Sequence[Reply] | None = None,
        *,
        responder: Responder | None = None,
        model: str = "scripted-model",
    ) -> None:
        self.script: list[Reply] = list(script or ())
        self.responder = responder
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.aborted_streams = 0
        """Answers (streamed or not) the client closed the connection on before they were complete."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(self._handler_class())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-openai", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def push(self, *replies: Reply) -> None:
        """Append replies to the script (thread-safe; the server may be running)."""
        with self._lock:
            self.script.extend(replies)

    def start(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake every handler (hangs included) and close every socket."""
        self._stopping.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
        with self._httpd.guard:
            conns, workers = list(self._httpd.conns), list(self._httpd.workers)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for w in workers:
            w.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            if self.script:
                return self.script.pop(0)
        if self.responder is not None:
            return self.responder(body)
        return text("(script exhausted)")

    def _note_abort(self) -> None:
        with self._lock:
            self.aborted_streams += 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in separate writes: without this, 40 ms delayed ACKs

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass  # quiet: tests read outcomes, not access logs

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    models = [{"id": outer.model, "object": "model", "created": 0, "owned_by": "scripted"}]
                    self._json(200, {"object": "list", "data": models})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except json.JSONDecodeError as exc:
                    self._json(400, {"error": {"message": f"bad JSON: {exc}", "type": "invalid_request_error"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                with outer._lock:
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = outer._next_reply(body)
                try:
                    self._answer(reply, body)
                except (_ClientLeft, BrokenPipeError, ConnectionResetError):
                    outer._note_abort()
                    self.close_connection = True

            def _answer(self, reply: Reply, body: dict[str, Any]) -> None:
                self._wait(reply.delay)
                if reply.status != 200:
                    err = {"message": reply.message, "type": "scripted", "code": None}
                    self._json(reply.status, {"error": err}, reply.headers)
                    return
                model = body.get("model") or outer.model
                if body.get("stream"):
                    usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    self._stream(reply, model, usage)
                    return
                if reply.hang:
                    self._wait(None)
                msg: dict[str, Any] = {"role": "assistant", "content": reply.content}
                if reply.calls:
                    msg["tool_calls"] = [_call_part(c) for c in reply.calls]
                answer: dict[str, Any] = {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": msg, "finish_reason": reply.finish_reason}],
                }
                if reply.usage is not None:
                    answer["usage"] = _usage(reply.usage)
                self._json(200, answer)

            def _stream(self, reply: Reply, model: str, include_usage: bool) -> None:
                chunks = _chunks(reply, model, include_usage)
                finish_at = next(i for i, c in enumerate(chunks) if c != b"[DONE]" and _is_finish(c))
                cut = reply.drop_after if reply.drop_after is not None else finish_at
                broken = reply.drop is not None or reply.drop_after is not None or reply.hang
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                if broken:
                    self.send_header("Connection", "close")
                self.end_headers()
                for payload in chunks[:cut] if broken else chunks:
                    self._wait(reply.chunk_delay)
                    self._chunk(b"data: " + payload + b"\n\n")
                if reply.hang:
                    self._wait(None)
                if reply.drop == "cut":
                    self.close_connection = True  # the socket closes mid-body: no terminating chunk
                    return
                self._chunk(b"")  # the terminating zero-length chunk: the body ends cleanly

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _wait(self, seconds: float | None) -> None:
                """Sleep (``None``: until the server stops), noticing a client that hangs up meanwhile."""
                if seconds is not None and seconds <= 0:
                    return
                end = None if seconds is None else time.monotonic() + seconds
                sock = self.connection
                while not outer._stopping.is_set():
                    left = 0.05 if end is None else min(0.05, end - time.monotonic())
                    if left <= 0:
                        return
                    readable, _, _ = select.select([sock], [], [], left)
                    if readable:
                        try:
                            if sock.recv(1, socket.MSG_PEEK) == b"":
                                raise _ClientLeft
                        except OSError:
                            raise _ClientLeft from None
                        time.sleep(left)  # the client sent more bytes (a pipelined request): keep waiting
                raise _ClientLeft  # stop() ends a hang like a departed client

            def _json(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        return Handler


def _call_part(call: Mapping[str, str]) -> dict[str, Any]:
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]}


def _is_finish(payload: bytes) -> bool:
    choices = json.loads(payload).get("choices") or []
    return bool(choices and choices[0].get("finish_reason"))


def _chunks(reply: Reply, model: str, include_usage: bool) -> list[bytes]:
    """Every SSE data payload of a streamed reply, in order (the caller decides where to stop)."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice]}
        return json.dumps(obj).encode()

    out = [chunk({"role": "assistant", "content": ""})]
    # word fragments that keep their whitespace, so the fragments join back to the exact text
    out += [chunk({"content": frag}) for frag in re.findall(r"\s*\S+\s*|\s+", reply.content or "")]
    for i, call in enumerate(reply.calls):
        head = {"index": i, "id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": ""}}
        out.append(chunk({"tool_calls": [head]}))
        args = call["arguments"]
        for j in range(0, len(args), 8):
            fn = {"arguments": args[j : j + 8]}
            if reply.repeat_name:
                fn["name"] = call["name"]  # llama.cpp repeats the name in every delta
            out.append(chunk({"tool_calls": [{"index": i, "function": fn}]}))
    out.append(chunk({}, reply.finish_reason))
    if include_usage and reply.usage is not None:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": []}
        obj["usage"] = _usage(reply.usage)
        out.append(json.dumps(obj).encode())
    out.append(b"[DONE]")
    return out
