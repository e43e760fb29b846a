"""RefreshBundle acknowledgement through Envoy (REST) vs direct gRPC, 50 concurrent clients.

    apt-get install -y wrk     # the REST load generator (Debian package)
    .venv/bin/python bench/rest_bench.py [--runs 3] [--seconds 10] [--clients 50]

One nats-server, the gateway, and Envoy transcoding REST to it. The gRPC side is a Python
grpc.aio client process with 50 concurrent callers; the REST side is wrk with 50
connections (2 threads). Every request names a new user, so each takes the full refresh
path. Prints a Markdown table of medians: p50, p99 and requests/s for each.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshctl.nats_server import NatsServer  # noqa: E402
from meshkit.bearer import aio_bearer_channel  # noqa: E402
from tests.support.envoy import rest_proxy  # noqa: E402
from tests.support.mesh import Mesh  # noqa: E402

WRK_SCRIPT = """
local counter = 0
local prefix = "w"
function setup(thread)
  thread:set("prefix", "w" .. tostring(math.random(100000, 999999)))
end
function request()
  counter = counter + 1
  local path = "/v1/users/" .. prefix .. "-" .. counter .. "/bundle:refresh"
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer TOKEN"}
  return wrk.format("POST", path, headers, "{}")
end
"""


async def grpc_load(
    target: str, token: str, clients: int, seconds: float, run: int
) -> dict[str, float]:
    latencies: list[float] = []
    async with aio_bearer_channel(target, token) as channel:
        stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
        end = time.perf_counter() + seconds

        async def client(c: int) -> None:
            n = 0
            while time.perf_counter() < end:
                start = time.perf_counter()
                await stub.RefreshBundle(pb.RefreshBundleRequest(user=f"g{run}-{c}-{n}"))
                latencies.append((time.perf_counter() - start) * 1000)
                n += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "rps": len(latencies) / elapsed,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_load(base_url: str, clients: int, seconds: float, script: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{clients}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(script),
            base_url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert p50 and p99 and rps, out
    assert not errors, out
    return {"p50": _ms(p50.group(1)), "p99": _ms(p99.group(1)), "rps": float(rps.group(1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "refresh.lua"
        nats = NatsServer(Path(tmp) / "nats").start()
        mesh = Mesh(
            nats.url,
            Path(tmp) / "mesh",
            env={
                "CONTEXTMESH_LOG_LEVEL": "warning",
                # One client token floods on purpose: measure the path, not the caller limit.
                "CONTEXTMESH_REFRESH_RATE": "1000000",
                "CONTEXTMESH_REFRESH_BURST": "1000000",
            },
        )
        script.write_text(WRK_SCRIPT.replace("TOKEN", mesh.admin_token))
        try:
            mesh.start("gateway")
            target = mesh.gateway_target
            with rest_proxy(mesh.gateway_target, Path(tmp) / "envoy") as proxy:
                direct, rest = [], []
                for run in range(args.runs):
                    direct.append(
                        asyncio.run(
                            grpc_load(target, mesh.admin_token, args.clients, args.seconds, run)
                        )
                    )
                    rest.append(wrk_load(proxy.base_url, args.clients, args.seconds, script))
        finally:
            mesh.stop_all()
            nats.stop()

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(
        f"median of {args.runs} runs of {args.seconds:.0f} s, {args.clients} concurrent "
        "clients, every request a new user\n"
    )
    print("| path | p50 | p99 | requests/s |")
    print("|---|---|---|---|")
    print(
        f"| gRPC direct (Python grpc.aio client) | {med(direct, 'p50'):.1f} ms | "
        f"{med(direct, 'p99'):.1f} ms | {med(direct, 'rps'):.0f} |"
    )
    print(
        f"| REST through Envoy (wrk) | {med(rest, 'p50'):.1f} ms | {med(rest, 'p99'):.1f} ms | "
        f"{med(rest, 'rps'):.0f} |"
    )


if __name__ == "__main__":
    main()
