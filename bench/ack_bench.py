"""RefreshBundle acknowledgement latency, beside an empty grpc.aio RPC taken in the same run.

    .venv/bin/python bench/ack_bench.py [--runs 3] [--seconds 10]

Starts a nats-server, the gateway (a separate process, no workers: tasks just queue), a
"floor" process serving an empty unary RPC on the same gRPC stack, and a control process
whose RPC does nothing but one nats-py KV read (a quarter of RefreshBundle's NATS work),
then measures all three with one Python grpc.aio client process:
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

from meshctl.nats_server import NatsServer  # noqa: E402
from meshkit.bearer import aio_bearer_channel  # noqa: E402
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

# The control: the floor plus one KV direct get, the cheapest of RefreshBundle's four NATS
# round trips. It shows what a single nats-py round trip costs on this stack.
KV_READ_SERVER = """
import asyncio, sys, grpc, nats
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError
async def main():
    nc = await nats.connect(sys.argv[2])
    config = KeyValueConfig(bucket="bench_control", direct=True)
    kv = await nc.jetstream().create_key_value(config)
    async def read(request, context):
        try:
            await kv.get("absent")
        except KeyNotFoundError:
            pass
        return b""
    handler = grpc.method_handlers_generic_handler(
        "bench.Control", {"Read": grpc.unary_unary_rpc_method_handler(read)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""

Call = Callable[[int], Awaitable[object]]
MEASURES = (
    ("floor", "empty RPC (floor)"),
    ("kv_read", "one KV read RPC"),
    ("refresh", "RefreshBundle"),
)


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


async def measure(
    gateway: str, token: str, floor: str, control: str, seconds: float, run: int
) -> dict[str, float]:
    async with (
        aio_bearer_channel(gateway, token) as gch,
        grpc.aio.insecure_channel(floor) as fch,
        grpc.aio.insecure_channel(control) as cch,
    ):
        stub = bundle_service_pb2_grpc.BundleServiceStub(gch)
        health = health_pb2_grpc.HealthStub(fch)
        read = cch.unary_unary("/bench.Control/Read")
        prefix = f"r{run}-{os.getpid()}"

        async def refresh(n: int) -> object:
            return await stub.RefreshBundle(pb.RefreshBundleRequest(user=f"{prefix}-{n}"))

        async def empty(n: int) -> object:
            return await health.Check(health_pb2.HealthCheckRequest())

        async def kv_read(n: int) -> object:
            return await read(b"")

        calls = {"floor": empty, "kv_read": kv_read, "refresh": refresh}
        for call in calls.values():  # warm up connections and code paths
            for n in range(200):
                await call(10**8 + n)
        out: dict[str, float] = {}
        for name, call in calls.items():
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
                # One client token floods on purpose: measure the path, not the per-caller limit.
                "CONTEXTMESH_REFRESH_RATE": "1000000",
                "CONTEXTMESH_REFRESH_BURST": "1000000",
            },
        )
        floor_port, control_port = free_port(), free_port()
        helpers = [
            subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(floor_port)]),
            subprocess.Popen([sys.executable, "-c", KV_READ_SERVER, str(control_port), nats.url]),
        ]
        try:
            mesh.start("gateway")
            time.sleep(0.5)
            runs = [
                asyncio.run(
                    measure(
                        mesh.gateway_target,
                        mesh.admin_token,
                        f"127.0.0.1:{floor_port}",
                        f"127.0.0.1:{control_port}",
                        args.seconds,
                        run,
                    )
                )
                for run in range(args.runs)
            ]
        finally:
            for helper in helpers:
                helper.terminate()
                helper.wait()
            mesh.stop_all()
            nats.stop()
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"median of {args.runs} runs, {args.seconds:.0f} s per measure, "
        f"nats-server sync_interval {args.nats_sync_interval}\n"
    )
    rows = [
        ("one client p50", "seq_p50", "ms", ""),
        ("one client p99", "seq_p99", "ms", "≤ 10 ms"),
        ("200 req/s offered, p50", "open_p50", "ms", ""),
        ("200 req/s offered, p99", "open_p99", "ms", "≤ 25 ms"),
        ("50 concurrent clients", "c50_rps", "req/s", "≥ 33% of floor"),
    ]
    print("| measure | " + " | ".join(title for _, title in MEASURES) + " | target |")
    print("|---" * (len(MEASURES) + 2) + "|")
    for label, key, unit, target in rows:
        cells = []
        for name, _ in MEASURES:
            value = med[f"{name}_{key}"]
            cell = f"{value:.2f} ms" if unit == "ms" else f"{value:,.0f} req/s"
            if unit == "req/s" and name != "floor":
                cell += f" ({value / med[f'floor_{key}']:.0%} of floor)"
            cells.append(cell)
        print(f"| {label} | " + " | ".join(cells) + f" | {target} |")


if __name__ == "__main__":
    main()
