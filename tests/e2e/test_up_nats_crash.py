"""The single nats-server of plain `contextmesh up`, SIGKILLed mid-refresh, is started again by
the supervisor on the same store (issue 14): the job completes, and nothing that was
acknowledged is lost (`sync_interval: always`: every write is fsynced before its ack), so every
repository is counted once, with one merge and one move of the bundle pointer."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshkit.bearer import bearer_channel
from meshkit.nats_auth import ADMIN, seed_path
from tests.e2e.checks import job_record
from tests.e2e.conftest import REPOS
from tests.e2e.up_support import processes_using, start_up
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

JobState = job_pb2.JobState


def nats_server_pid(data_dir: Path) -> int | None:
    for pid in processes_using(str(data_dir / "nats")):
        try:
            if Path(f"/proc/{pid}/exe").resolve().name == "nats-server":
                return pid
        except OSError:
            continue
    return None


def watch_to_the_end(
    stub: bundle_service_pb2_grpc.BundleServiceStub,
    job_id: str,
    on_update: Callable[[job_pb2.Job], None],
) -> job_pb2.Job:
    """Follow the job to its final state as a client would: a watch cut while NATS is down
    is opened again."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            for update in stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=60):
                on_update(update.job)
                if update.final:
                    job: job_pb2.Job = update.job
                    return job
        except grpc.RpcError:
            time.sleep(0.5)  # the gateway is reconnecting to the restarted server
    raise AssertionError("the job did not end")


def test_a_crash_of_ups_nats_server_mid_refresh_loses_nothing(
    tmp_path: Path, big_source: Path
) -> None:
    data_dir = tmp_path / "data"
    ports = {name: free_port() for name in ("grpc", "rest", "nats", "search", "admin")}
    env = {**os.environ, "CONTEXTMESH_SYNC_CONCURRENCY": "4"}
    up = start_up(
        data_dir,
        ports,
        tmp_path / "up.log",
        env=env,
        options=["--local-source", str(big_source), "--rest-port", "0"],
    )
    token = (data_dir / "auth" / "admin.token").read_text().strip()
    try:
        with bearer_channel(f"127.0.0.1:{ports['grpc']}", token) as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            job_id = stub.RefreshBundle(pb.RefreshBundleRequest(user="bob")).job.id
            killed: list[int] = []

            def crash_once(job: job_pb2.Job) -> None:
                if not killed and job.synced >= 40:
                    assert job.synced < REPOS, "the job finished before the crash"
                    pid = nats_server_pid(data_dir)
                    assert pid is not None
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

            final = watch_to_the_end(stub, job_id, crash_once)
        assert killed and nats_server_pid(data_dir) not in (None, killed[0])  # restarted
        assert final.state == JobState.JOB_STATE_DONE, (tmp_path / "up.log").read_text()
        assert (final.total, final.synced, final.failed) == (REPOS, REPOS, 0)
        url = f"nats://127.0.0.1:{ports['nats']}"
        record, pointer_writes = asyncio.run(
            job_record(url, job_id, seed=seed_path(data_dir / "nats" / "auth", ADMIN))
        )
        assert record.merges == 1 and pointer_writes == 1
        assert sum(bin(b).count("1") for b in record.counted) == REPOS
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
