"""The bridge across processes: deliveries per second and request/reply latency.

    python bench/bridge.py [--events 50000] [--calls 2000] [--runs 3]
    python bench/bridge.py --traced --events 3000 --calls 500   # telemetry on in every process

Three processes per workload: this one runs the runtime and the bridge; the others are SDK
agents joined with address=. `throughput`: a producer agent emits N small events, a consumer
agent (another process) counts them; deliveries/s is measured by the consumer from the first to
the last event. `rpc`: an asker agent makes N sequential ctx.request round trips to an echo
agent in a third process (after 200 warm-up calls); `one_hop`: the same asker to an echo agent
in the bridge's own process (the notebook case: a remote agent asking the kernel). Each workload
runs twice: on the same-host stream the SDK picks by default (loom.bridge.local) and on gRPC's
EventStream (LOOM_BRIDGE_LOCAL=0, what an agent on another host gets). Floors, between two
processes without Loom: a bare grpc.aio stream ping-pong, and a ping-pong of the same messages in
frames over a loopback socket. Agent to agent through the hub needs two round trips, so twice a
floor is the least a hub on that transport can reach here. Medians of the runs. ``--traced``
turns telemetry on (spans into the in-memory collector) in this process and every agent process:
what tracing costs a bridged conversation (a traced 50 000-event burst outruns the producer's
2 s shutdown grace: use fewer events).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from _stats import Arrivals, latency_summary, medians


class _Echo:
    """A bare grpc.aio Bridge servicer that answers each ping with a pong: the transport floor."""

    async def EventStream(self, it, ctx):  # noqa: N802
        from loom.bridge._pb.loom.v1 import bridge_pb2

        async for m in it:
            yield bridge_pb2.ServerEvent(pong=bridge_pb2.HeartbeatResponse(timestamp_ms=m.ping.timestamp_ms))


async def ping_pong(stream: Any, n: int) -> dict:
    """Sequential ping → pong round trips on a stream with ``write`` and ``read`` (200 warm-up)."""
    from loom.bridge._pb.loom.v1 import bridge_pb2

    lat = []
    for i in range(200 + n):
        t0 = time.perf_counter_ns()
        await stream.write(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=i)))
        await stream.read()
        if i >= 200:
            lat.append(time.perf_counter_ns() - t0)
    return latency_summary(lat)


async def floor_client(address: str, n: int) -> dict:
    from loom.bridge._grpc import grpc
    from loom.bridge._pb.loom.v1 import bridge_pb2_grpc

    async with grpc.aio.insecure_channel(address) as ch:
        call = bridge_pb2_grpc.BridgeStub(ch).EventStream()
        result = await ping_pong(call, n)
        await call.done_writing()
    return result


async def frame_floor_client(address: str, n: int) -> dict:
    from loom.bridge._pb.loom.v1 import bridge_pb2
    from loom.bridge.framing import FrameStream

    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    stream = FrameStream(reader, writer, bridge_pb2.ServerEvent, 1 << 22)
    result = await ping_pong(stream, n)
    await stream.aclose()
    return result


def _trace_if_asked() -> None:
    if os.environ.get("LOOM_BENCH_TRACED") == "1":
        import loom.telemetry

        loom.telemetry.init_telemetry(capacity=1000)


async def role(name: str, address: str, n: int) -> None:
    import loom

    _trace_if_asked()

    if name == "frame_floor_server":
        from loom.bridge._pb.loom.v1 import bridge_pb2
        from loom.bridge.framing import FrameStream

        async def serve(reader, writer):
            stream = FrameStream(reader, writer, bridge_pb2.ClientEvent, 1 << 22)
            async for m in stream:
                pong = bridge_pb2.HeartbeatResponse(timestamp_ms=m.ping.timestamp_ms)
                await stream.write(bridge_pb2.ServerEvent(pong=pong))
            await stream.aclose()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()
        return

    if name == "floor_server":
        from loom.bridge._grpc import grpc
        from loom.bridge._pb.loom.v1 import bridge_pb2_grpc

        server = grpc.aio.server()
        bridge_pb2_grpc.add_BridgeServicer_to_server(type("E", (_Echo, bridge_pb2_grpc.BridgeServicer), {})(), server)
        print(server.add_insecure_port("127.0.0.1:0"), flush=True)
        await server.start()
        await server.wait_for_termination()
        return

    if name == "consumer":
        count = Arrivals(n)
        agent = await loom.Agent("consumer", topics=["bench.flow"], on_event=count, address=address).start()
        print("ready", flush=True)
        print(await count.result(), flush=True)
        await agent.stop()
    elif name == "producer":
        agent = await loom.Agent("producer", address=address).start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # go
        for _ in range(n):
            await agent.emit("bench.flow", b"x" * 16, type="tick")
        await asyncio.sleep(2)
        await agent.stop()
    elif name == "echo":

        async def echo(ctx, topic, event):
            await ctx.reply(ctx.thread(event), event.payload)

        await loom.Agent("echo", topics=["bench.rpc"], on_event=echo, address=address).run()
    elif name == "asker":
        agent = await loom.Agent("asker", address=address).start()
        thread = agent.ctx.new_thread()
        lat = []
        for i in range(200 + n):
            t0 = time.perf_counter_ns()
            reply = await agent.ctx.request(thread, "bench.rpc", b"ping", timeout_ms=5000)
            assert reply is not None and reply.payload == b"ping"
            if i >= 200:
                lat.append(time.perf_counter_ns() - t0)
        print(json.dumps(latency_summary(lat)), flush=True)
        await agent.stop()


async def spawn(name: str, address: str, n: int, stdin: bool = False, kind: str = "local") -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role",
        name,
        "--address",
        address,
        "--n",
        str(n),
        stdin=asyncio.subprocess.PIPE if stdin else None,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "LOOM_BRIDGE_LOCAL": "1" if kind == "local" else "0"},
    )


async def workloads(address: str, rt, events: int, calls: int, kind: str) -> dict:
    """deliveries/s, two-hop and one-hop request/reply, with every agent process on ``kind``."""
    import loom

    consumer = await spawn("consumer", address, events, kind=kind)
    assert (await consumer.stdout.readline()).startswith(b"ready")
    producer = await spawn("producer", address, events, stdin=True, kind=kind)
    assert (await producer.stdout.readline()).startswith(b"ready")
    producer.stdin.write(b"go\n")
    await producer.stdin.drain()
    flow = json.loads(await asyncio.wait_for(consumer.stdout.readline(), 300))
    await consumer.wait()
    await producer.wait()
    echo = await spawn("echo", address, 0, kind=kind)
    await asyncio.sleep(1.5)
    asker = await spawn("asker", address, calls, kind=kind)
    rpc = json.loads(await asyncio.wait_for(asker.stdout.readline(), 300))
    await asker.wait()
    echo.terminate()
    await echo.wait()

    async def local_echo(ctx, topic, event):  # the responder in the bridge's own process: one hop
        await ctx.reply(ctx.thread(event), event.payload)

    responder = await loom.Agent(f"echo-{kind}", topics=["bench.rpc"], on_event=local_echo, runtime=rt).start()
    asker = await spawn("asker", address, calls, kind=kind)
    one_hop = json.loads(await asyncio.wait_for(asker.stdout.readline(), 300))
    await asker.wait()
    await responder.stop()
    return {
        f"{kind}_deliveries_per_s": flow["events"] / flow["seconds"],
        f"{kind}_p50_us": rpc["p50_us"],
        f"{kind}_p99_us": rpc["p99_us"],
        f"{kind}_one_hop_p50_us": one_hop["p50_us"],
        f"{kind}_one_hop_p99_us": one_hop["p99_us"],
    }


async def floor(role_name: str, client, calls: int) -> float:
    server = await spawn(role_name, "-", 0)
    port = int(await server.stdout.readline())
    result = await client(f"127.0.0.1:{port}", calls)
    server.terminate()
    await server.wait()
    return result["p50_us"]


async def run_once(events: int, calls: int) -> dict:
    import loom

    _trace_if_asked()

    out: dict = {}
    async with loom.Loom(native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        for kind in ("local", "grpc"):
            out.update(await workloads(f"127.0.0.1:{server.port}", rt, events, calls, kind))
    out["grpc_floor_p50_us"] = await floor("floor_server", floor_client, calls)
    out["frame_floor_p50_us"] = await floor("frame_floor_server", frame_floor_client, calls)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--traced", action="store_true", help="telemetry on in every process")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        asyncio.run(role(args.role, args.address, args.n))
        return
    if args.traced:  # the agent processes inherit it
        os.environ["LOOM_BENCH_TRACED"] = "1"
    runs = [asyncio.run(run_once(args.events, args.calls)) for _ in range(args.runs)]
    for r in runs:
        print(json.dumps({"bench": "bridge", "run": True, **{k: round(v, 1) for k, v in r.items()}}), flush=True)
    summary = {"bench": "bridge", "runs": args.runs, "events": args.events, "calls": args.calls, "traced": args.traced}
    print(json.dumps({**summary, **medians(runs, 1)}))


if __name__ == "__main__":
    main()
