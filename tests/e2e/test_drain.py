"""SIGTERM drains a worker process: the task it is handling when the signal comes finishes,
is counted and acked, and nothing is redelivered or lost (docs/architecture.md, "JetStream")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsServer
from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from meshkit.topology import SYNC
from tests.support.fake_github import FakeGithub, populate
from tests.support.mesh import Mesh

JobState = job_pb2.JobState
TOKEN = "ghp_" + "D" * 36
SLOW = "octo/repo-0001"
SLOW_S = 6.0


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    with FakeGithub(token=TOKEN) as gh:
        populate(gh, "octo", 3)
        yield gh


async def sync_consumer(url: str) -> tuple[int, int, int]:
    """SYNC's consumer: deliveries waiting, deliveries unacknowledged, redeliveries."""
    nc, js = await connect(NatsSettings(url=url), name="test")
    try:
        info = await js.consumer_info(SYNC.stream, SYNC.consumer)
        return info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0
    finally:
        await nc.drain()


def test_sigterm_lets_the_task_in_flight_finish_and_be_acked(
    fresh_nats: NatsServer, tmp_path: Path, github: FakeGithub
) -> None:
    # The slow repository's first request is answered SLOW_S late: its task is in flight.
    github.slow(SLOW_S, repo=SLOW, times=1)
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env={
            "CONTEXTMESH_SOURCE": "github",
            "CONTEXTMESH_GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
        },
    )
    try:
        for service in ("gateway", "syncsvc", "mergesvc"):
            mesh.start(service)
        with mesh.channel() as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            job_id = stub.RefreshBundle(pb.RefreshBundleRequest(user="octo")).job.id

            deadline = time.monotonic() + 30
            while stub.GetJob(pb.GetJobRequest(id=job_id)).job.synced < 2:
                assert time.monotonic() < deadline, mesh.logs()
                time.sleep(0.05)
            signalled = time.time()
            assert mesh.stop("syncsvc", timeout=30) == 0, mesh.logs()

            synced = stub.GetJob(pb.GetJobRequest(id=job_id)).job.synced
            assert synced == 3, "the task in flight finished and counted before the exit"
            pending, unacked, redelivered = asyncio.run(sync_consumer(fresh_nats.url))
            assert (pending, unacked, redelivered) == (0, 0, 0), "acked, and nothing redelivered"
            slow = max(github.requests(repo=SLOW), key=lambda r: r.finished - r.started)
            assert slow.started < signalled < slow.finished, "the signal came mid-task"

            final = list(stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=60))[-1].job
            assert final.state == JobState.JOB_STATE_DONE, mesh.logs()
            assert (final.synced, final.failed) == (3, 0)
    finally:
        mesh.stop_all()
