"""End-to-end refresh time against the GitHub stand-in, and GitHub requests per refresh.

    .venv/bin/python bench/e2e_bench.py [--sizes 10,100,1000] [--workers 1,2] [--runs 3]
                                        [--latency-ms 50] [--concurrency 40]

For each size and worker count: a fresh nats-server, the gateway, N sync workers and the
merge worker as separate processes (as in production), and the GitHub stand-in with the
given latency added to every response. It times RefreshBundle until WatchJob's final
message (first refresh: everything fetched), then an unchanged refresh, and counts the
stand-in's requests for each. Prints Markdown tables of medians.
"""

from __future__ import annotations

import argparse
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
from tests.support.fake_github import FakeGithub, populate  # noqa: E402
from tests.support.mesh import Mesh  # noqa: E402

CONTENT = ("contents", "readme")


def one_run(size: int, workers: int, latency_s: float, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, FakeGithub(latency_s=latency_s) as gh:
        populate(gh, "octo", size)
        nats = NatsServer(Path(tmp) / "nats").start()
        mesh = Mesh(
            nats.url,
            Path(tmp) / "mesh",
            env={
                "CONTEXTMESH_SOURCE": "github",
                "CONTEXTMESH_GITHUB_API_URL": gh.url,
                "CONTEXTMESH_SYNC_CONCURRENCY": str(concurrency),
                "CONTEXTMESH_LOG_LEVEL": "warning",
            },
        )
        try:
            mesh.start("gateway")
            for i in range(workers):
                mesh.start("syncsvc", name=f"syncsvc-{i}")
            mesh.start("mergesvc")
            time.sleep(1.0)  # let every worker bind its consumer
            with mesh.channel() as channel:
                stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
                out: dict[str, float] = {}
                for label in ("first", "unchanged"):
                    gh.reset_log()
                    start = time.perf_counter()
                    job = stub.RefreshBundle(pb.RefreshBundleRequest(user="octo")).job
                    final = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=600))[-1]
                    out[f"{label}_s"] = time.perf_counter() - start
                    assert final.final and final.job.total == size, final
                    stats = gh.stats()
                    out[f"{label}_requests"] = stats["requests"]
                    out[f"{label}_content"] = sum(gh.count(kind=k) for k in CONTENT)
                    out[f"{label}_non304"] = stats["requests"] - stats["by_status"].get("304", 0)
                out["max_in_flight"] = gh.stats()["max_in_flight"]
                return out
        finally:
            mesh.stop_all()
            nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=40, help="per sync worker")
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for workers in (int(w) for w in args.workers.split(",")):
            runs = [
                one_run(size, workers, args.latency_ms / 1000, args.concurrency)
                for _ in range(args.runs)
            ]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows.append((size, workers, med))
            print(f"size {size} workers {workers}: {med}", file=sys.stderr, flush=True)
    print(
        f"median of {args.runs} runs; {args.latency_ms:.0f} ms added to every GitHub "
        f"response; {args.concurrency} requests in flight per worker at most\n"
    )
    print("| repositories | sync workers | first refresh | repositories/s | unchanged refresh |")
    print("|---|---|---|---|---|")
    for size, workers, med in rows:
        print(
            f"| {size} | {workers} | {med['first_s']:.2f} s | {size / med['first_s']:.0f} | "
            f"{med['unchanged_s']:.2f} s |"
        )
    print(
        "\n| repositories | first: requests (content) | unchanged: requests | "
        "unchanged: content requests | unchanged: answers other than 304 |"
    )
    print("|---|---|---|---|---|")
    for size, workers, med in rows:
        if workers == 1:
            print(
                f"| {size} | {med['first_requests']:.0f} ({med['first_content']:.0f}) | "
                f"{med['unchanged_requests']:.0f} | {med['unchanged_content']:.0f} | "
                f"{med['unchanged_non304']:.0f} |"
            )


if __name__ == "__main__":
    main()
