"""Per-unit costs of a refresh, measured on real processes: what docs/capacity.md builds on.

    .venv/bin/python bench/capacity_probe.py [--repos 200] [--latency-ms 50] [--runs 3]

Runs the gateway, two sync workers and the merge worker against one nats-server and the
GitHub stand-in (as bench/e2e_bench.py does), then for a first refresh of `--repos`
repositories (four files each) and for an unchanged refresh right after it reads:
- CPU seconds each service process used (user + system, from /proc), per repository;
- JetStream messages and bytes written (every stream's last sequence and bytes, KV included);
- GitHub requests (from the stand-in);
- the bundle's size and the blob bytes stored after the refresh (the filesystem store's files).
Prints a Markdown table of medians over `--runs` fresh meshes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshctl.nats_server import NatsServer  # noqa: E402
from meshkit.config import NatsSettings  # noqa: E402
from meshkit.nats_client import connect  # noqa: E402
from tests.support.fake_github import FakeGithub, populate  # noqa: E402
from tests.support.mesh import Mesh  # noqa: E402

SERVICES = ("gateway", "syncsvc-1", "syncsvc-2", "mergesvc")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def stream_totals(url: str) -> tuple[int, int]:
    """Messages ever written (last sequences) and bytes held, over every stream."""
    nc, js = await connect(NatsSettings(url=url), name="capacity-probe")
    try:
        messages = stored = 0
        for info in await js.streams_info():
            messages += info.state.last_seq
            stored += info.state.bytes
        return messages, stored
    finally:
        await nc.drain()


def blob_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def one_run(repos: int, latency_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, FakeGithub(latency_s=latency_s) as gh:
        populate(gh, "octo", repos)
        nats = NatsServer(Path(tmp) / "nats").start()
        mesh = Mesh(
            nats.url,
            Path(tmp) / "mesh",
            env={
                "CONTEXTMESH_SOURCE": "github",
                "CONTEXTMESH_GITHUB_API_URL": gh.url,
                "CONTEXTMESH_LOG_LEVEL": "warning",
            },
        )
        try:
            mesh.start("gateway")
            mesh.start("syncsvc", name="syncsvc-1")
            mesh.start("syncsvc", name="syncsvc-2")
            mesh.start("mergesvc")
            time.sleep(1.0)  # every worker binds its consumer
            out: dict[str, float] = {}
            with mesh.channel() as channel:
                stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
                for label in ("first", "unchanged"):
                    gh.reset_log()
                    cpu = {s: cpu_seconds(mesh.procs[s].pid) for s in SERVICES}
                    messages, _ = asyncio.run(stream_totals(nats.url))
                    job = stub.RefreshBundle(pb.RefreshBundleRequest(user="octo")).job
                    final = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=600))[-1]
                    assert final.final and final.job.total == repos, final
                    time.sleep(0.5)  # the last acks and writes land
                    for s in SERVICES:
                        used = cpu_seconds(mesh.procs[s].pid) - cpu[s]
                        out[f"{label}_cpu_ms_per_repo_{s}"] = 1000 * used / repos
                    after, held = asyncio.run(stream_totals(nats.url))
                    out[f"{label}_messages_per_repo"] = (after - messages) / repos
                    out[f"{label}_stream_bytes"] = held
                    out[f"{label}_github_requests_per_repo"] = gh.stats()["requests"] / repos
                    out[f"{label}_bundle_bytes_per_repo"] = final.job.bundle.size_bytes / repos
                    out[f"{label}_blob_bytes_per_repo"] = (
                        blob_bytes(Path(tmp) / "mesh" / "data" / "blobs") / repos
                    )
            return out
        finally:
            mesh.stop_all()
            nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.repos, args.latency_ms / 1000) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"{args.repos} repositories of four files, median of {args.runs} runs\n")
    print("| per repository | first refresh | unchanged refresh |")
    print("|---|---|---|")
    for service in SERVICES:
        first = med[f"first_cpu_ms_per_repo_{service}"]
        again = med[f"unchanged_cpu_ms_per_repo_{service}"]
        print(f"| CPU, {service} | {first:.2f} ms | {again:.2f} ms |")
    for key, unit in (
        ("messages_per_repo", "JetStream messages"),
        ("github_requests_per_repo", "GitHub requests"),
        ("bundle_bytes_per_repo", "bundle bytes"),
        ("blob_bytes_per_repo", "blob bytes held after it"),
    ):
        print(f"| {unit} | {med['first_' + key]:.1f} | {med['unchanged_' + key]:.1f} |")
    print(
        f"\nJetStream bytes held after the first refresh: {med['first_stream_bytes']:.0f}; "
        f"after the unchanged one: {med['unchanged_stream_bytes']:.0f}"
    )


if __name__ == "__main__":
    main()
