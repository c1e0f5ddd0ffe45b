"""Runtimes sharing a bus through NATS: deliveries/s, request/reply latency, replicated agents.

    python bench/cluster.py [--events 50000] [--calls 2000] [--work 4000] [--durable-events 10000]
                            [--runs 3] [--no-bridge] [--rpc-only]

One local nats-server (the packaged binary, 127.0.0.1) per run; every workload runs between
processes. `throughput`: a producer runtime publishes N small events on its bus (exported), a
consumer runtime in another process has an agent on the topic that counts them (first to last).
`rpc`: an asker agent makes N sequential ctx.request round trips to an echo agent in another
runtime (200 warm-up), with the envelope keys in NATS headers (the default) and in the body
(``envelope_headers=False``). `replicas`: this process publishes W events that a `loom worker` agent
handles (burning 500 µs of CPU each, then reporting on work.done), with 1, 2 and 3 workers; the
figure is W over the time until the last work.done arrived, plus the workers' CPU per event.
`durable`: like `throughput` (D events, --durable-events), but the consumer's agent has BACKGROUND
QoS, so its events come through a durable JetStream consumer (each acked after the handler), and the
producer, told by the shared directory, sends each into the stream acked by the server.
Floors, in the same run, with bare nats-py and no Loom code: pub/sub between two processes (the
same protobuf bodies, no headers, as Loom's plain events), a request round trip between two
processes (also with the Loom-Envelope header a request carries, both ways: the floor of the header
encoding), and one client answering itself (the reference's ~500 µs). Each round trip also reports
the client CPU it cost, both processes together (`*_cpu_us_per_call`: process time over the calls;
steadier than latency on a shared machine). The bridge's figures of the same shape come from running
bench/bridge.py once in the same run (unless --no-bridge; --rpc-only runs the round trips alone).
Medians of the runs; the JSON lines carry every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _stats import Arrivals, latency_summary, medians

ROOT = Path(__file__).resolve().parents[1]
WORK_MS = 0.5  # CPU each replicated event costs its handler (tests/peers/cluster_agents.py:cpu)


def _body() -> bytes:
    import loom
    from loom.cluster.codec import encode

    return encode(loom.Event("tick", b"x" * 16), "bench-node")[0]


def _envelope_header() -> dict[str, str]:
    """The Loom-Envelope header a request carries (the same bytes): the floor of the header encoding."""
    import loom
    from loom.cluster.codec import encode
    from loom.events.envelope import Envelope

    event = loom.Event("collab.request", b"ping")
    Envelope.new(event.id, "agent.asker", reply_to="agent.asker.replies").apply_to(event.metadata)
    return encode(event, "bench-node")[1] or {}


# -- roles: each runs in its own process --------------------------------------------------
async def role(name: str, url: str, n: int) -> None:
    import nats

    import loom

    if name == "bare_sub":
        nc = await nats.connect(url)
        got, first, done = 0, 0.0, asyncio.Event()

        async def cb(msg):
            nonlocal got, first
            if got == 0:
                first = time.perf_counter()
            got += 1
            if got == n:
                done.set()

        await nc.subscribe("bench.flow", cb=cb, pending_msgs_limit=n + 1)
        await nc.flush()
        print("ready", flush=True)
        await done.wait()
        print(json.dumps({"events": n, "seconds": time.perf_counter() - first}), flush=True)
        await nc.close()
    elif name == "bare_pub":
        nc = await nats.connect(url)
        body = _body()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        for _ in range(n):
            await nc.publish("bench.flow", body)
        await nc.flush()
        await nc.close()
    elif name in ("bare_echo", "bare_echo_hdr"):
        nc = await nats.connect(url)
        headers = _envelope_header() if name == "bare_echo_hdr" else None

        async def answer(msg):
            await nc.publish(msg.reply, msg.data, headers=headers)

        await nc.subscribe("bench.rpc", cb=answer)
        await nc.flush()
        print("ready", flush=True)
        cpu0 = time.process_time()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(json.dumps({"cpu_s": time.process_time() - cpu0}), flush=True)
        await nc.close()
    elif name in ("bare_ask", "bare_ask_hdr"):
        nc = await nats.connect(url)
        body, lat = _body(), []
        headers = _envelope_header() if name == "bare_ask_hdr" else None
        for i in range(200 + n):
            if i == 200:
                cpu0 = time.process_time()
            t0 = time.perf_counter_ns()
            await nc.request("bench.rpc", body, timeout=5, headers=headers)
            if i >= 200:
                lat.append(time.perf_counter_ns() - t0)
        print(json.dumps(latency_summary(lat, time.process_time() - cpu0)), flush=True)
        await nc.close()
    elif name == "consumer":
        count = Arrivals(n)
        async with loom.Loom(name="consumer", native_tools=()) as rt:
            await rt.join_cluster(url, import_=["bench.flow"], export=[], share_directory=False)
            await loom.Agent("consumer", topics=["bench.flow"], on_event=count, runtime=rt).start()
            print("ready", flush=True)
            print(await count.result(), flush=True)
    elif name == "producer":
        async with loom.Loom(name="producer", native_tools=()) as rt:
            await rt.join_cluster(url, export=["bench.flow"], import_=[], share_directory=False)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            for _ in range(n):
                await rt.bus.publish("bench.flow", loom.Event("tick", b"x" * 16))
            await rt.cluster.nc.flush()
    elif name == "durable_consumer":  # an agent with BACKGROUND QoS: fed by a durable JetStream consumer
        take = Arrivals(n)
        async with loom.Loom(name="dconsumer", native_tools=()) as rt:
            await rt.join_cluster(url, import_=["bench.dflow"], export=["bench.dflow"], heartbeat_s=0.2)
            agent = loom.Agent("dconsumer", ["bench.dflow"], on_event=take, runtime=rt, qos=loom.QoS.BACKGROUND)
            await agent.start()
            for feed in rt.cluster.feeds.feeds.values():
                await feed.started.wait()
            print("ready", flush=True)
            print(await take.result(), flush=True)
    elif name == "durable_producer":  # learns from the directory that the subject is durable: acked sends
        async with loom.Loom(name="dproducer", native_tools=()) as rt:
            await rt.join_cluster(url, export=["bench.dflow"], import_=[], heartbeat_s=0.2)
            while rt.cluster.durable_export is None or not rt.cluster.durable_export.covers("bench.dflow"):  # noqa: ASYNC110 - the directory's watch sets it, no event to wait on
                await asyncio.sleep(0.05)
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            for _ in range(n):
                await rt.bus.publish("bench.dflow", loom.Event("tick", b"x" * 16))
            await rt.cluster.durable_export.flush(120)
    elif name in ("echo", "echo_body"):

        async def echo(ctx, topic, event):
            await ctx.reply(ctx.thread(event), event.payload)

        async with loom.Loom(name="echo", native_tools=()) as rt:
            await rt.join_cluster(url, share_directory=False, envelope_headers=name == "echo")
            await loom.Agent("echo", topics=["bench.rpc"], on_event=echo, runtime=rt).start()
            print("ready", flush=True)
            cpu0 = time.process_time()
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            print(json.dumps({"cpu_s": time.process_time() - cpu0}), flush=True)
    elif name in ("asker", "asker_body"):
        async with loom.Loom(name="asker", native_tools=()) as rt:
            await rt.join_cluster(url, share_directory=False, envelope_headers=name == "asker")
            agent = await loom.Agent("asker", runtime=rt).start()
            thread, lat = agent.ctx.new_thread(), []
            for i in range(200 + n):
                if i == 200:
                    cpu0 = time.process_time()
                t0 = time.perf_counter_ns()
                reply = await agent.ctx.request(thread, "bench.rpc", b"ping", timeout_ms=5000)
                assert reply is not None and reply.payload == b"ping"
                if i >= 200:
                    lat.append(time.perf_counter_ns() - t0)
            print(json.dumps(latency_summary(lat, time.process_time() - cpu0)), flush=True)


async def spawn(*args: str, env: dict | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})},
    )


async def me(name: str, url: str, n: int) -> asyncio.subprocess.Process:
    return await spawn(__file__, "--role", name, "--url", url, "--n", str(n))


async def flow(url: str, n: int, sub: str, pub: str) -> float:
    consumer = await me(sub, url, n)
    assert (await consumer.stdout.readline()).startswith(b"ready")
    producer = await me(pub, url, n)
    assert (await producer.stdout.readline()).startswith(b"ready")
    producer.stdin.write(b"go\n")
    await producer.stdin.drain()
    result = json.loads(await asyncio.wait_for(consumer.stdout.readline(), 300))
    await consumer.wait()
    await producer.wait()
    return result["events"] / result["seconds"]


async def round_trips(url: str, n: int, echo_role: str, ask_role: str) -> dict:
    """The asker's latency summary, plus ``echo_cpu_us_per_call``: the answering process's CPU per call
    (its warm-up calls included, so a little high), next to the asker's ``cpu_us_per_call``."""
    echo = await me(echo_role, url, 0)
    assert (await echo.stdout.readline()).startswith(b"ready")
    asker = await me(ask_role, url, n)
    result = json.loads(await asyncio.wait_for(asker.stdout.readline(), 300))
    await asker.wait()
    echo.stdin.write(b"stop\n")
    await echo.stdin.drain()
    result["echo_cpu_us_per_call"] = json.loads(await echo.stdout.readline())["cpu_s"] / (n + 200) * 1e6
    await echo.wait()
    return result


async def self_round_trip(url: str, n: int) -> dict:
    import nats

    nc = await nats.connect(url)

    async def answer(msg):
        await msg.respond(msg.data)

    await nc.subscribe("bench.self", cb=answer)
    lat = []
    for i in range(200 + n):
        t0 = time.perf_counter_ns()
        await nc.request("bench.self", b"ping", timeout=5)
        if i >= 200:
            lat.append(time.perf_counter_ns() - t0)
    await nc.close()
    return latency_summary(lat)


async def replicas(url: str, workers: int, n: int) -> dict:
    import loom

    procs = []
    for _ in range(workers):
        args = ("-m", "loom.cli", "worker", "--cluster", url, "tests.peers.cluster_agents:cpu")
        p = await spawn(*args, env={"LOOM_WORK_MS": str(WORK_MS)})
        assert b'"ready"' in await p.stdout.readline()
        procs.append(p)
    async with loom.Loom(name="bench", native_tools=()) as rt:
        # the shared directory tells this runtime that a queue group serves work.in.*: one event per message
        await rt.join_cluster(url, export=["work.in.>"], import_=["work.done"], heartbeat_s=0.5)
        while not rt.cluster.grouped.matches("work.in.0"):  # noqa: ASYNC110 - set by the directory's watcher
            await asyncio.sleep(0.05)
        done = rt.bus.subscribe("work.done", maxsize=n + 1)
        t0 = time.perf_counter()
        for i in range(n):
            await rt.bus.publish(f"work.in.{i % 8}", loom.Event("work", b"x" * 16))
        for _ in range(n):
            await asyncio.wait_for(done.get(), 60)
        seconds = time.perf_counter() - t0
    cpu = 0.0
    for p in procs:
        p.stdin.close()
        p.terminate()
        tail = json.loads((await p.stdout.read()).decode().strip().splitlines()[-1])
        cpu += tail.get("cpu_s", 0.0)
        await p.wait()
    key = f"replicas_{workers}"
    return {f"{key}_per_s": n / seconds, f"{key}_worker_cpu_us_per_event": cpu / n * 1e6}


def bridge_figures(events: int, calls: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bridge.py"), "--events", str(events), "--calls", str(calls)]
        + ["--runs", "1"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "bridge_deliveries_per_s": summary["local_deliveries_per_s"],
        "bridge_grpc_deliveries_per_s": summary["grpc_deliveries_per_s"],
        "bridge_p50_us": summary["local_p50_us"],
        "bridge_grpc_p50_us": summary["grpc_p50_us"],
    }


async def run_once(events: int, calls: int, work: int, rpc_only: bool = False, durable: int = 10_000) -> dict:
    from loom.cluster import NatsServer

    out: dict = {}
    with NatsServer() as server:
        url = server.url
        if not rpc_only:
            out["bare_deliveries_per_s"] = await flow(url, events, "bare_sub", "bare_pub")
            out["nats_deliveries_per_s"] = await flow(url, events, "consumer", "producer")
            out["durable_deliveries_per_s"] = await flow(url, durable, "durable_consumer", "durable_producer")
        for key, echo, ask in (
            ("bare", "bare_echo", "bare_ask"),
            ("bare_hdr", "bare_echo_hdr", "bare_ask_hdr"),
            ("nats", "echo", "asker"),
            ("nats_body_envelope", "echo_body", "asker_body"),
        ):
            rpc = await round_trips(url, calls, echo, ask)
            out[f"{key}_p50_us"], out[f"{key}_p99_us"] = rpc["p50_us"], rpc["p99_us"]
            # client CPU per round trip, both processes (asker + echo): less noisy than latency
            out[f"{key}_cpu_us_per_call"] = rpc["cpu_us_per_call"] + rpc["echo_cpu_us_per_call"]
            if key == "bare":
                out["bare_self_p50_us"] = (await self_round_trip(url, calls))["p50_us"]
        if not rpc_only:
            for w in (1, 2, 3):
                out.update(await replicas(url, w, work))
    if not rpc_only:
        out["throughput_vs_floor"] = out["nats_deliveries_per_s"] / out["bare_deliveries_per_s"]
    out["p50_vs_floor"] = out["nats_p50_us"] / out["bare_p50_us"]
    out["p50_vs_hdr_floor"] = out["nats_p50_us"] / out["bare_hdr_p50_us"]
    out["body_envelope_p50_vs_floor"] = out["nats_body_envelope_p50_us"] / out["bare_p50_us"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--work", type=int, default=4000)
    ap.add_argument("--durable-events", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-bridge", action="store_true", help="skip bench/bridge.py")
    ap.add_argument("--rpc-only", action="store_true", help="only the request round trips (implies --no-bridge)")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        asyncio.run(role(args.role, args.url, args.n))
        return
    runs = []
    for _ in range(args.runs):
        r = asyncio.run(run_once(args.events, args.calls, args.work, args.rpc_only, args.durable_events))
        if not (args.no_bridge or args.rpc_only):
            r.update(bridge_figures(args.events, args.calls))
        runs.append(r)
        print(json.dumps({"bench": "cluster", "run": True, **{k: round(v, 2) for k, v in r.items()}}), flush=True)
    summary = {"bench": "cluster", "runs": args.runs, "events": args.events, "calls": args.calls, "work": args.work}
    print(json.dumps({**summary, **medians(runs, 2)}))


if __name__ == "__main__":
    main()
