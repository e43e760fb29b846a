"""Fairness on SYNC: a small refresh's time alone, and while a big refresh runs.

    .venv/bin/python bench/fairness_bench.py [--small 10] [--big 2000] [--runs 3]
                                             [--workers 2] [--concurrency 40]
                                             [--latency-ms 50] [--window 80]

Each run: a fresh nats-server, the gateway, the sync workers and the merge worker as separate
processes, and the GitHub stand-in with the given latency added to every response. A
`--small`-repository user is refreshed alone (after an untimed one that warms every process);
then a `--big`-repository user's refresh is started, and once it has synced a tenth of its
repositories another `--small`-repository user is refreshed. Each time is from RefreshBundle
to WatchJob's final message. While the big job runs, the SYNC consumer's deliveries in flight
are sampled every 0.1 s: their mean over the sync phase, divided by the workers' slots, is the
utilisation. `--window` sets CONTEXTMESH_SYNC_WINDOW (10000 puts every task out at once, as
the single FIFO did before the window). Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import nats
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshctl.nats_server import NatsServer  # noqa: E402
from meshkit.topology import SYNC  # noqa: E402
from tests.support.fake_github import FakeGithub, populate  # noqa: E402
from tests.support.mesh import Mesh  # noqa: E402

SAMPLE_S = 0.1


class Refresh:
    """One refresh, watched on a thread until its final message."""

    def __init__(self, stub: bundle_service_pb2_grpc.BundleServiceStub, user: str) -> None:
        self.stub = stub
        self.start = time.perf_counter()
        self.job = stub.RefreshBundle(pb.RefreshBundleRequest(user=user)).job
        self.synced = 0
        self.seconds = 0.0
        self.done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        for update in self.stub.WatchJob(pb.WatchJobRequest(id=self.job.id), timeout=900):
            self.synced = update.job.synced
            if update.final:
                assert update.job.failed == 0, update.job
                break
        self.seconds = time.perf_counter() - self.start
        self.done.set()

    def wait(self) -> float:
        self.done.wait()
        return self.seconds


class InFlight:
    """Samples SYNC's deliveries not yet acknowledged (busy worker slots) on a thread."""

    def __init__(self, nats_url: str) -> None:
        self.samples: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._sample(nats_url),))
        self.thread.start()

    async def _sample(self, nats_url: str) -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            while not self.stop.is_set():
                info = await js.consumer_info(SYNC.stream, SYNC.consumer)
                self.samples.append(info.num_ack_pending or 0)
                await asyncio.sleep(SAMPLE_S)
        finally:
            await nc.close()

    def busy(self) -> list[int]:
        """The samples from the first delivery to the last: the sync phase."""
        self.stop.set()
        self.thread.join()
        used = [i for i, n in enumerate(self.samples) if n]
        return self.samples[used[0] : used[-1] + 1] if used else []


def one_run(args: argparse.Namespace) -> dict[str, float]:
    slots = args.workers * args.concurrency
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeGithub(latency_s=args.latency_ms / 1000) as gh,
    ):
        users = (
            ("warm", args.small),
            ("solo", args.small),
            ("big", args.big),
            ("small", args.small),
        )
        for user, size in users:
            populate(gh, user, size)
        server = NatsServer(Path(tmp) / "nats").start()
        mesh = Mesh(
            server.url,
            Path(tmp) / "mesh",
            env={
                "CONTEXTMESH_SOURCE": "github",
                "CONTEXTMESH_GITHUB_API_URL": gh.url,
                "CONTEXTMESH_SYNC_CONCURRENCY": str(args.concurrency),
                "CONTEXTMESH_SYNC_WINDOW": str(args.window),
                "CONTEXTMESH_LOG_LEVEL": "warning",
            },
        )
        try:
            mesh.start("gateway")
            for i in range(args.workers):
                mesh.start("syncsvc", name=f"syncsvc-{i}")
            mesh.start("mergesvc")
            time.sleep(1.0)  # let every worker bind its consumer
            with mesh.channel() as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
                stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
                Refresh(stub, "warm").wait()  # every process past its first task
                alone = Refresh(stub, "solo").wait()
                sampler = InFlight(server.url)
                big = Refresh(stub, "big")
                while big.synced < args.big // 10 and not big.done.is_set():
                    time.sleep(0.05)
                during = Refresh(stub, "small").wait()
                big_s = big.wait()
                busy = sampler.busy()
        finally:
            mesh.stop_all()
            server.stop()
    return {
        "alone_s": alone,
        "during_s": during,
        "ratio": during / alone,
        "big_s": big_s,
        "utilisation": statistics.fmean(busy) / slots if busy else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--big", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=40, help="per sync worker")
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--window", type=int, default=80, help="CONTEXTMESH_SYNC_WINDOW")
    args = parser.parse_args()
    runs = []
    for n in range(args.runs):
        runs.append(one_run(args))
        print(f"run {n + 1}: {runs[-1]}", file=sys.stderr, flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"median of {args.runs} runs; {args.latency_ms:.0f} ms added to every GitHub response; "
        f"{args.workers} sync workers x {args.concurrency} slots; window {args.window}\n"
    )
    print(
        f"| {args.small} alone | {args.small} during {args.big} | ratio | "
        f"{args.big} refresh | sync slots busy |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {med['alone_s']:.2f} s | {med['during_s']:.2f} s | {med['ratio']:.2f}x | "
        f"{med['big_s']:.1f} s | {med['utilisation']:.0%} |"
    )


if __name__ == "__main__":
    main()
