"""The bridge across processes: deliveries per second and request/reply latency.

    python bench/bridge.py [--events 50000] [--calls 2000] [--runs 3]

Three processes per workload: this one runs the runtime and the bridge; the others are SDK
agents joined with address=. `throughput`: a producer agent emits N small events, a consumer
agent (another process) counts them; deliveries/s is measured by the consumer from the first to
the last event. `rpc`: an asker agent makes N sequential ctx.request round trips to an echo
agent in a third process (after 200 warm-up calls); `one_hop`: the same asker to an echo agent
in the bridge's own process (the notebook case: a remote agent asking the kernel). `floor`: a
bare grpc.aio stream ping-pong between two processes (no Loom): agent to agent through the hub
needs two such round trips, so twice the floor is the least a grpc.aio hub can reach here.
Medians of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

from _stats import latency_summary


class _Echo:
    """A bare grpc.aio Bridge servicer that answers each ping with a pong: the transport floor."""

    async def EventStream(self, it, ctx):  # noqa: N802
        from loom.bridge._pb.loom.v1 import bridge_pb2

        async for m in it:
            yield bridge_pb2.ServerEvent(pong=bridge_pb2.HeartbeatResponse(timestamp_ms=m.ping.timestamp_ms))


async def floor_client(address: str, n: int) -> dict:
    from loom.bridge._grpc import grpc
    from loom.bridge._pb.loom.v1 import bridge_pb2, bridge_pb2_grpc

    async with grpc.aio.insecure_channel(address) as ch:
        call = bridge_pb2_grpc.BridgeStub(ch).EventStream()
        lat = []
        for i in range(200 + n):
            t0 = time.perf_counter_ns()
            await call.write(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=i)))
            await call.read()
            if i >= 200:
                lat.append(time.perf_counter_ns() - t0)
        await call.done_writing()
    return latency_summary(lat)


async def role(name: str, address: str, n: int) -> None:
    import loom

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
        got, first, done = 0, 0.0, asyncio.Event()

        async def count(ctx, topic, event):
            nonlocal got, first
            if got == 0:
                first = time.perf_counter()
            got += 1
            if got == n:
                done.set()

        agent = await loom.Agent("consumer", topics=["bench.flow"], on_event=count, address=address).start()
        print("ready", flush=True)
        await done.wait()
        print(json.dumps({"events": n, "seconds": time.perf_counter() - first}), flush=True)
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


async def spawn(name: str, address: str, n: int, stdin: bool = False) -> asyncio.subprocess.Process:
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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def run_once(events: int, calls: int) -> dict:
    import loom

    async with loom.Loom(native_tools=()) as rt:
        server = await rt.start_bridge(port=0)
        address = f"127.0.0.1:{server.port}"
        consumer = await spawn("consumer", address, events)
        assert (await consumer.stdout.readline()).startswith(b"ready")
        producer = await spawn("producer", address, events, stdin=True)
        assert (await producer.stdout.readline()).startswith(b"ready")
        producer.stdin.write(b"go\n")
        await producer.stdin.drain()
        flow = json.loads(await asyncio.wait_for(consumer.stdout.readline(), 300))
        await consumer.wait()
        await producer.wait()
        echo = await spawn("echo", address, 0)
        await asyncio.sleep(1.5)
        asker = await spawn("asker", address, calls)
        rpc = json.loads(await asyncio.wait_for(asker.stdout.readline(), 300))
        await asker.wait()
        echo.terminate()
        await echo.wait()

        async def local_echo(ctx, topic, event):  # the responder in the bridge's own process: one hop
            await ctx.reply(ctx.thread(event), event.payload)

        await loom.Agent("echo", topics=["bench.rpc"], on_event=local_echo, runtime=rt).start()
        asker = await spawn("asker", address, calls)
        one_hop = json.loads(await asyncio.wait_for(asker.stdout.readline(), 300))
        await asker.wait()
    floor_server = await spawn("floor_server", "-", 0)
    port = int(await floor_server.stdout.readline())
    floor = await floor_client(f"127.0.0.1:{port}", calls)
    floor_server.terminate()
    await floor_server.wait()
    return {
        "deliveries_per_s": flow["events"] / flow["seconds"],
        "p50_us": rpc["p50_us"],
        "p99_us": rpc["p99_us"],
        "one_hop_p50_us": one_hop["p50_us"],
        "floor_p50_us": floor["p50_us"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        asyncio.run(role(args.role, args.address, args.n))
        return
    runs = [asyncio.run(run_once(args.events, args.calls)) for _ in range(args.runs)]
    for r in runs:
        print(json.dumps({"bench": "bridge", "run": True, **{k: round(v, 1) for k, v in r.items()}}), flush=True)
    print(
        json.dumps(
            {
                "bench": "bridge",
                "runs": args.runs,
                "events": args.events,
                "calls": args.calls,
                "deliveries_per_s": round(statistics.median(r["deliveries_per_s"] for r in runs)),
                "rpc_p50_us": round(statistics.median(r["p50_us"] for r in runs), 1),
                "rpc_p99_us": round(statistics.median(r["p99_us"] for r in runs), 1),
                "one_hop_rpc_p50_us": round(statistics.median(r["one_hop_p50_us"] for r in runs), 1),
                "grpc_stream_pingpong_p50_us": round(statistics.median(r["floor_p50_us"] for r in runs), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
