"""A hung service replica (SIGSTOPped: alive, holding its tasks, saying nothing) does not
hold a refresh up (issue 14): its tasks go to the other replica once their ack wait passes
without a heartbeat, the job completes while it is still stopped, and when it wakes and
finishes its stale work late, nothing is counted twice."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsServer
from tests.e2e.checks import job_record, sync_deliveries, wait_until_handled
from tests.e2e.conftest import big_source_env
from tests.support.mesh import Mesh

pytestmark = pytest.mark.slow

JobState = job_pb2.JobState


def test_a_hung_sync_replica_does_not_hold_the_refresh_up(
    fresh_nats: NatsServer, tmp_path: Path, big_source: Path
) -> None:
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env=big_source_env(big_source),
    )
    try:
        mesh.start("gateway")
        hung = mesh.start("syncsvc", name="hung")
        mesh.start("syncsvc", name="healthy")
        mesh.start("mergesvc")
        with mesh.channel() as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            job = stub.RefreshBundle(pb.RefreshBundleRequest(user="bob")).job
            stopped = False
            for update in stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=180):
                if not stopped and update.job.synced >= 40:
                    os.kill(hung.pid, signal.SIGSTOP)
                    stopped = True
                final = update
            assert stopped
            assert hung.poll() is None  # still alive, still stopped: it did not do the rest
            assert final.job.state == JobState.JOB_STATE_DONE, mesh.logs()
            total = final.job.total
            assert (final.job.synced, final.job.failed) == (total, 0)
            published, deliveries = asyncio.run(sync_deliveries(fresh_nats.url))
            assert deliveries > published  # the hung replica's tasks went out again

            # It wakes, finishes what it held, and tries to count it: nothing changes.
            os.kill(hung.pid, signal.SIGCONT)
            asyncio.run(wait_until_handled(fresh_nats.url))
            record, pointer_writes = asyncio.run(job_record(fresh_nats.url, job.id))
            assert (record.job.synced, record.merges, pointer_writes) == (total, 1, 1)
            assert sum(bin(b).count("1") for b in record.counted) == total
    finally:
        mesh.stop_all()
