"""A refresh on `contextmesh up` against `up --cluster`, and on the cluster with a server
killed mid-refresh, on the same machine in one run (issue 14).

    .venv/bin/python bench/cluster_bench.py [--repos 1000] [--runs 3] [--latency-ms 50]

Each run starts `up --github --no-training` (one nats-server) or `up --cluster --github
--no-training` (three, every stream and bucket R3, two replicas of every service) on fresh
ports and a fresh data dir, against the GitHub stand-in with the given latency added to every
response, and times RefreshBundle until WatchJob's final message. In the third mode the
server leading SYNC is SIGKILLed once a third of the repositories are counted, and started
again by up's supervisor. Prints a Markdown table of medians, and the figures each run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshkit.bearer import bearer_channel  # noqa: E402
from meshkit.nats_auth import ADMIN, inbox_prefix, seed_path  # noqa: E402
from tests.e2e.up_support import processes_using, start_up  # noqa: E402
from tests.support.fake_github import FakeGithub, populate  # noqa: E402
from tests.support.ports import free_port, free_ports_in_a_row  # noqa: E402

MODES = ("one server", "cluster", "cluster, SYNC leader killed")


async def sync_leader(url: str, seed: Path) -> str:
    nc = await nats.connect(url, nkeys_seed=str(seed), inbox_prefix=inbox_prefix(ADMIN))
    try:
        info = await nc.jetstream().stream_info("SYNC")
        assert info.cluster is not None and info.cluster.leader
        return info.cluster.leader
    finally:
        await nc.close()


def kill_server(data_dir: Path, name: str) -> None:
    for pid in processes_using(str(data_dir / "nats-cluster" / name)):
        if Path(f"/proc/{pid}/exe").resolve().name == "nats-server":
            os.kill(pid, signal.SIGKILL)
            return
    raise RuntimeError(f"no nats-server {name} running")


def one_run(mode: str, repos: int, latency_s: float) -> float:
    with tempfile.TemporaryDirectory() as tmp, FakeGithub(latency_s=latency_s) as gh:
        populate(gh, "octo", repos)
        data_dir = Path(tmp) / "data"
        ports = {name: free_port() for name in ("grpc", "rest", "search", "admin")}
        ports["nats"] = free_ports_in_a_row(3)  # a cluster takes the next two too
        env = {**os.environ, "CONTEXTMESH_GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "bench"}
        options = ["--github", "--rest-port", "0"]
        if mode != "one server":
            options.append("--cluster")
        up = start_up(data_dir, ports, Path(tmp) / "up.log", env=env, options=options)
        try:
            token = (data_dir / "auth" / "admin.token").read_text().strip()
            with bearer_channel(f"127.0.0.1:{ports['grpc']}", token) as channel:
                stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
                time.sleep(2.0)  # every worker binds its consumer
                start = time.perf_counter()
                job = stub.RefreshBundle(pb.RefreshBundleRequest(user="octo")).job
                killed = mode != MODES[2]
                final = None
                while final is None:
                    try:
                        for update in stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=600):
                            if not killed and update.job.synced >= repos // 3:
                                seed = seed_path(data_dir / "nats" / "auth", ADMIN)
                                url = f"nats://127.0.0.1:{ports['nats']}"
                                kill_server(data_dir, asyncio.run(sync_leader(url, seed)))
                                killed = True
                            if update.final:
                                final = update.job
                    except Exception:  # the watch's server went away: watch again
                        time.sleep(0.2)
                elapsed = time.perf_counter() - start
                assert final.total == repos and final.synced == repos, final
                return elapsed
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50)
    args = parser.parse_args()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for run in range(args.runs):
        for mode in MODES:  # interleaved: a noisy minute hits every mode alike
            seconds = one_run(mode, args.repos, args.latency_ms / 1000)
            times[mode].append(seconds)
            print(f"run {run + 1}: {mode}: {seconds:.2f} s", file=sys.stderr, flush=True)
    base = statistics.median(times[MODES[0]])
    print(
        f"{args.repos} repositories, {args.latency_ms:.0f} ms added to every GitHub response, "
        f"median of {args.runs} runs\n"
    )
    print("| mode | refresh | repositories/s | vs one server |")
    print("|---|---|---|---|")
    for mode in MODES:
        median = statistics.median(times[mode])
        print(f"| {mode} | {median:.2f} s | {args.repos / median:.0f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
