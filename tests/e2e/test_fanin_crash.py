"""Fan-in happens exactly once, whatever crashes and redeliveries do (guarantee 3,
docs/architecture.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
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
from meshkit.topology import MERGE, SYNC, Buckets
from tests.e2e.conftest import write_repo
from tests.support.mesh import Mesh
from tests.support.polling import until

JobState = job_pb2.JobState
REPOS = 400


@pytest.fixture
def big_source(tmp_path: Path) -> Path:
    root = tmp_path / "big"
    for i in range(REPOS):
        write_repo(root, "bob", f"repo-{i:03d}", description=f"Repository {i}", tech=["Go"])
    return root


async def job_record(url: str, job_id: str) -> tuple[job_record_pb2.JobRecord, int]:
    """The job's record, and how many times bob's bundle pointer was written."""
    nc, js = await connect(NatsSettings(url=url), name="test")
    try:
        entry = await (await js.key_value(Buckets.JOBS.name)).get(job_id)
        record = job_record_pb2.JobRecord()
        record.ParseFromString(entry.value or b"")
        # Counted on the stream, not with KV history(): nats-py's watch behind history() can
        # end its initial values before the first one arrives.
        subject = f"$KV.{Buckets.BUNDLES.name}.bob"
        info = await js.stream_info(f"KV_{Buckets.BUNDLES.name}", subjects_filter=subject)
        return record, (info.state.subjects or {}).get(subject, 0)
    finally:
        await nc.drain()


async def sync_deliveries(url: str) -> tuple[int, int]:
    """How many sync tasks were published, and how many deliveries of them the SYNC consumer
    made: more deliveries than tasks means some task went out again (a redelivery)."""
    nc, js = await connect(NatsSettings(url=url), name="test")
    try:
        published = (await js.stream_info(SYNC.stream)).state.last_seq
        consumer = await js.consumer_info(SYNC.stream, SYNC.consumer)
        return published, consumer.delivered.consumer_seq or 0
    finally:
        await nc.drain()


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


async def wait_until_handled(url: str, limit_s: float = 30.0) -> None:
    """Until SYNC and MERGE are empty: work-queue streams drop a task once it is acked, so
    the duplicates were handled (not merely not yet seen) when the assertions run."""
    nc, js = await connect(NatsSettings(url=url), name="test")

    async def drained() -> bool:
        return not sum([(await js.stream_info(s.stream)).state.messages for s in (SYNC, MERGE)])

    try:
        await until(drained, limit_s, "SYNC and MERGE to drain")
    finally:
        await nc.drain()


def test_sigkill_of_a_sync_worker_mid_job_counts_each_repository_once(
    fresh_nats: NatsServer, tmp_path: Path, big_source: Path
) -> None:
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env={
            "CONTEXTMESH_SOURCE": "local",
            "CONTEXTMESH_LOCAL_SOURCE_DIR": str(big_source),
            "CONTEXTMESH_SYNC_CONCURRENCY": "4",
        },
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
