"""RefreshBundle acknowledgement latency, beside an empty grpc.aio RPC taken in the same run.

    .venv/bin/python bench/ack_bench.py [--runs 3] [--seconds 10]

Starts a nats-server, the gateway (a separate process, no workers: tasks just queue) and a
"floor" process serving an empty unary RPC on the same gRPC stack, then measures both with
one Python grpc.aio client process:
  1. one client, sequential calls: p50 / p99
  2. open loop at an offered 200 requests/s (latency from the scheduled send time, so a
     stall is not hidden): p50 / p99
  3. 50 concurrent clients, closed loop: requests/s
Each refresh names a different user, so every call takes the full path: coalescing check,
pointer compare-and-set, job record create, publish. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshkit.nats_server import NatsServer  # noqa: E402
from tests.support.mesh import Mesh  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

FLOOR_SERVER = """
import asyncio, sys, grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
async def main():
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""

Call = Callable[[int], Awaitable[object]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential(call: Call, seconds: float) -> tuple[float, float]:
    latencies = []
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        start = time.perf_counter()
        await call(n)
        latencies.append((time.perf_counter() - start) * 1000)
        n += 1
    return pct(latencies, 0.5), pct(latencies, 0.99)


async def open_loop(call: Call, rate: float, seconds: float) -> tuple[float, float]:
    latencies: list[float] = []
    interval = 1 / rate
    start = time.perf_counter()
    tasks = []

    async def one(n: int, scheduled: float) -> None:
        await call(n)
        latencies.append((time.perf_counter() - scheduled) * 1000)

    for n in range(int(rate * seconds)):
        scheduled = start + n * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, scheduled)))
    await asyncio.gather(*tasks)
    return pct(latencies, 0.5), pct(latencies, 0.99)


async def concurrent(call: Call, clients: int, seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await call(next(counter))
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - started)


async def measure(gateway: str, floor: str, seconds: float, run: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(gateway) as gch, grpc.aio.insecure_channel(floor) as fch:
        stub = bundle_service_pb2_grpc.BundleServiceStub(gch)
        health = health_pb2_grpc.HealthStub(fch)
        prefix = f"r{run}-{os.getpid()}"

        async def refresh(n: int) -> object:
            return await stub.RefreshBundle(pb.RefreshBundleRequest(user=f"{prefix}-{n}"))

        async def empty(n: int) -> object:
            return await health.Check(health_pb2.HealthCheckRequest())

        for call in (refresh, empty):  # warm up connections and code paths
            for n in range(200):
                await call(10**8 + n)
        out: dict[str, float] = {}
        for name, call in (("floor", empty), ("refresh", refresh)):
            out[f"{name}_seq_p50"], out[f"{name}_seq_p99"] = await sequential(call, seconds)
            out[f"{name}_open_p50"], out[f"{name}_open_p99"] = await open_loop(call, 200, seconds)
            prefix = f"{prefix}c"
            out[f"{name}_c50_rps"] = await concurrent(call, 50, seconds)
            prefix = f"{prefix}d"
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--nats-sync-interval",
        default="always",
        help="'always' (shipped: fsync before every ack) or e.g. 2m (nats-server's default)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(Path(tmp) / "nats", sync_interval=args.nats_sync_interval).start()
        mesh = Mesh(
            nats.url,
            Path(tmp) / "mesh",
            env={
                "CONTEXTMESH_LOG_LEVEL": "warning",
                "CONTEXTMESH_SOURCE": "local",
                "CONTEXTMESH_LOCAL_SOURCE_DIR": tmp,
            },
        )
        floor_port = free_port()
        floor = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(floor_port)])
        try:
            mesh.start("gateway")
            time.sleep(0.5)
            runs = [
                asyncio.run(
                    measure(mesh.gateway_target, f"127.0.0.1:{floor_port}", args.seconds, run)
                )
                for run in range(args.runs)
            ]
        finally:
            floor.terminate()
            floor.wait()
            mesh.stop_all()
            nats.stop()
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"median of {args.runs} runs, {args.seconds:.0f} s per measure, "
        f"nats-server sync_interval {args.nats_sync_interval}\n"
    )
    print("| measure | empty grpc.aio RPC (floor) | RefreshBundle | target |")
    print("|---|---|---|---|")
    print(f"| one client p50 | {med['floor_seq_p50']:.2f} ms | {med['refresh_seq_p50']:.2f} ms | |")
    print(
        f"| one client p99 | {med['floor_seq_p99']:.2f} ms | {med['refresh_seq_p99']:.2f} ms "
        "| ≤ 10 ms |"
    )
    print(
        f"| 200 req/s offered, p50 | {med['floor_open_p50']:.2f} ms | "
        f"{med['refresh_open_p50']:.2f} ms | |"
    )
    print(
        f"| 200 req/s offered, p99 | {med['floor_open_p99']:.2f} ms | "
        f"{med['refresh_open_p99']:.2f} ms | ≤ 25 ms |"
    )
    print(
        f"| 50 concurrent clients | {med['floor_c50_rps']:.0f} req/s | "
        f"{med['refresh_c50_rps']:.0f} req/s ({med['refresh_c50_rps'] / med['floor_c50_rps']:.0%} "
        "of floor) | ≥ 33% of floor |"
    )


if __name__ == "__main__":
    main()
