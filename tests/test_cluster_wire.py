"""The connection's shortcuts (loom.cluster.connection.shortcuts) put exactly nats-py's bytes on the wire
and read headers exactly as nats-py does: compared with a plain nats-py client on the same server, over
fixed and seeded random cases (values needing escape, other headers, status lines, several lines)."""

from __future__ import annotations

import random

import nats
import pytest

from loom.cluster import NatsServer
from loom.cluster.connection import ConnectionStats, connect, send_now

pytestmark = pytest.mark.slow


@pytest.fixture
async def clients():
    with NatsServer(jetstream=False) as server:
        fast = await connect([server.url], name="fast", stats=ConnectionStats())
        plain = await nats.connect(server.url)
        assert fast._send_publish != plain._send_publish  # the shortcuts are in place on this nats-py
        try:
            yield fast, plain
        finally:
            await fast.close()
            await plain.close()


async def test_headers_are_read_as_nats_py_reads_them(clients):
    fast, plain = clients
    rng = random.Random(15)
    alphabet = [b"a", b":", b" ", b"\r", b"\n", b"\r\n", b"Loom-Envelope", b"NATS/1.0", b"\xc3", b"{", b"\t", b"x: y"]
    cases = [
        b'NATS/1.0\r\nLoom-Envelope: {"thread_id":"t","hop":"0"}\r\n\r\n',
        b"NATS/1.0\r\nLoom-Batch: 1\r\n\r\n",
        b"NATS/1.0\r\nLoom-Envelope: a\r\nOther: b\r\n\r\n",
        b"NATS/1.0 503\r\n\r\n",
        b"NATS/1.0\r\nloom-envelope: lower\r\n\r\n",
    ]
    for _ in range(3000):
        head = rng.choice([b"Loom-Envelope:", b"Loom-Batch:", b"Loom-Envelope: ", b"", b"loom-batch:"])
        body = b"".join(rng.choices(alphabet, k=rng.randint(0, 5)))
        cases.append(b"NATS/1.0\r\n" + head + body + rng.choice([b"\r\n\r\n", b"\r\n", b""]))
    for raw in cases:
        try:
            want = await plain._process_headers(raw)
        except Exception as exc:  # noqa: BLE001 - then the shortcut must fail the same way
            with pytest.raises(type(exc)):
                await fast._process_headers(raw)
            continue
        assert await fast._process_headers(raw) == want, raw


async def test_messages_are_framed_as_nats_py_frames_them(clients):
    fast, plain = clients
    rng = random.Random(15)
    cases = [None, {"Loom-Envelope": '{"thread_id":"t"}'}, {"Loom-Batch": "1"}, {"Loom-Envelope": "a", "X": "y"}]
    for _ in range(3000):
        value = "".join(rng.choices(["a", " ", "\r", "\n", "é", "{", "\t", '"'], k=rng.randint(0, 6)))
        name = rng.choice(["Loom-Envelope", "Loom-Batch", "Other"])
        cases.append(rng.choice([{name: value}, {name: value, "X": "y"}]))
    for headers in cases:
        framed = []
        for nc in (fast, plain):
            nc._pending.clear()
            nc._pending_data_size = 0
            try:
                await nc._send_publish("s.x", "reply.to", b"data", 4, headers)
            except Exception as exc:  # noqa: BLE001 - both must refuse it alike
                framed.append(type(exc))
                continue
            framed.append(b"".join(nc._pending))  # the flusher has not run: no await since
            nc._pending.clear()
            nc._pending_data_size = 0
        assert framed[0] == framed[1], headers


async def test_send_now_writes_the_same_bytes_at_once_and_only_when_the_connection_is_idle(clients):
    fast, plain = clients
    writer = fast._transport._io_writer
    written: list[bytes] = []
    real = writer.write
    writer.write = lambda data: (written.append(bytes(data)), real(data))[1]
    try:
        headers = {"Loom-Envelope": '{"correlation_id":"c"}'}
        assert send_now(fast, "s.y", b"payload", headers)
        plain._pending.clear()
        await plain._send_publish("s.y", "", b"payload", 7, headers)
        assert written == [b"".join(plain._pending)]
        plain._pending.clear()
        assert not send_now(fast, "s.y", b"payload", headers)  # one per loop turn
        fast._pending.append(b"PING\r\n")  # something waits to be written: it must go first
        assert not send_now(fast, "s.z", b"p", headers)
    finally:
        fast._pending.clear()
        writer.write = real
