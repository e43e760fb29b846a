"""Fan-in happens exactly once, whatever crashes and redeliveries do (guarantee 3,
docs/architecture.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2

from meshctl.nats_server import NatsServer
from meshkit.blob import FilesystemBlobStore
from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from meshkit.publish import publish_task
from meshkit.topology import MERGE, SYNC
from tests.e2e.checks import job_record, sync_deliveries, wait_until_handled
from tests.e2e.conftest import REPOS, big_source_env
from tests.support.mesh import Mesh

JobState = job_pb2.JobState


async def republish(url: str, record: job_record_pb2.JobRecord) -> None:
    """Copies of tasks under new message ids: what a redelivery after the window looks like."""
    nc, js = await connect(NatsSettings(url=url), name="test")
    try:
        job = record.job
        for index in (0, 1, 2):
            task = sync_tasks.SyncRepoTask(
                meta=task_pb2.TaskMeta(job_id=job.id, task_id=f"dup-{index}"),
                user=job.user,
                repository=f"bob/repo-{index:03d}",
                index=index,
                fingerprint="whatever",
            )
            await publish_task(js, SYNC.subject, task, msg_id=f"dup-sync-{index}")
        merge = merge_tasks.MergeTask(
            meta=task_pb2.TaskMeta(job_id=job.id, task_id="dup-merge"),
            user=job.user,
            total=job.total,
        )
        await publish_task(js, MERGE.subject, merge, msg_id="dup-merge")
    finally:
        await nc.drain()


def test_sigkill_of_a_sync_worker_mid_job_counts_each_repository_once(
    fresh_nats: NatsServer, tmp_path: Path, big_source: Path
) -> None:
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env=big_source_env(big_source),
    )
    try:
        mesh.start("gateway")
        mesh.start("syncsvc", name="victim")
        mesh.start("syncsvc", name="survivor")
        mesh.start("mergesvc")
        with mesh.channel() as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            job_id = stub.RefreshBundle(pb.RefreshBundleRequest(user="bob")).job.id
            killed = False
            for update in stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=120):
                done = update.job.synced + update.job.failed
                if not killed and done >= 40:
                    assert done < REPOS, "the job finished before the kill; make it bigger"
                    mesh.kill("victim")
                    killed = True
                final = update
            assert killed
            assert final.final and final.job.state == JobState.JOB_STATE_DONE, mesh.logs()
            assert (final.job.total, final.job.synced, final.job.failed) == (REPOS, REPOS, 0)
            # The kill left tasks unacked, and the survivor took them again: without a
            # redelivery this test would prove nothing about counting each one once. (The
            # local source never fails a repository, so no retry adds deliveries.)
            published, deliveries = asyncio.run(sync_deliveries(fresh_nats.url))
            assert published == REPOS and deliveries > published, (published, deliveries)

            record, pointer_writes = asyncio.run(job_record(fresh_nats.url, job_id))
            assert record.merges == 1
            assert sum(bin(b).count("1") for b in record.counted) == REPOS
            assert pointer_writes == 1  # the user's bundle pointer moved exactly once

            blobs = FilesystemBlobStore(tmp_path / "data" / "blobs")
            document = json.loads(asyncio.run(blobs.get(final.job.bundle.blob_key)))
            names = [r["repository"] for r in document["repositories"]]
            assert len(names) == len(set(names)) == REPOS

            # Deliberate duplicates after the fact change no count and start no merge.
            asyncio.run(republish(fresh_nats.url, record))
            asyncio.run(wait_until_handled(fresh_nats.url))
            again, pointer_writes = asyncio.run(job_record(fresh_nats.url, job_id))
            assert (again.job.synced, again.merges, pointer_writes) == (REPOS, 1, 1)
            assert again.job.state == JobState.JOB_STATE_DONE
    finally:
        mesh.stop_all()
