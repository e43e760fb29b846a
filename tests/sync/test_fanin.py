"""Fan-in against a real nats-server: every repository counted once, exactly one merge task
per job, whatever the order, the redeliveries and the number of workers recording at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from contextmesh.job.v1 import job_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from nats.js import JetStreamContext

from meshkit.domain.ids import merge_msg_id, new_job_id
from meshkit.jobs import JobStore
from meshkit.topology import MERGE, Buckets
from syncsvc.fanin import FanIn
from tests.support.inproc import (
    new_user,
    own_connection,  # noqa: F401 - fixture: the test's own nats-server
    published,
    syncing_job,
)

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus


def outcome(index: int, status: int = RepoStatus.REPO_STATUS_SYNCED) -> sync_tasks.RepoOutcome:
    return sync_tasks.RepoOutcome(
        repository=f"owner/repo-{index}",
        index=index,
        status=status,  # type: ignore[arg-type]
        fingerprint=f"commit-{index}",
        result_key=f"repos/owner/repo-{index}/{index:064x}.json",
        reason="the source refused it" if status == RepoStatus.REPO_STATUS_FAILED else "",
    )


@dataclass
class Job:
    js: JetStreamContext
    fanin: FanIn
    id: str
    user: str

    async def record(self) -> job_pb2.Job:
        return (await self.fanin.jobs.get(self.id))[0].job

    async def merges(self) -> list[tuple[str, merge_tasks.MergeTask]]:
        return await published(self.js, MERGE, merge_tasks.MergeTask)


async def replica(js: JetStreamContext) -> FanIn:
    """The fan-in of one syncsvc replica: its own job store, as in its own process."""
    return FanIn(js, await JobStore.open(js), await js.key_value(Buckets.OUTCOMES.name))


OpenJob = Callable[[int], Awaitable[Job]]


@pytest.fixture
def open_job(js: JetStreamContext) -> OpenJob:
    """open_job(total): a SYNCING job of a new user, and the fan-in of one replica."""

    async def open_job(total: int) -> Job:
        fanin = await replica(js)
        job = Job(js, fanin, new_job_id(), new_user())
        await syncing_job(fanin.jobs, job.user, total, job.id)
        return job

    return open_job


async def test_the_last_outcome_starts_exactly_one_merge(open_job: OpenJob) -> None:
    job = await open_job(3)
    await job.fanin.record(job.id, job.user, [outcome(0)])
    await job.fanin.record(job.id, job.user, [outcome(2, RepoStatus.REPO_STATUS_UNCHANGED)])
    assert (await job.record()).state == JobState.JOB_STATE_SYNCING
    assert await job.merges() == []

    await job.fanin.record(job.id, job.user, [outcome(1, RepoStatus.REPO_STATUS_FAILED)])
    done = await job.record()
    assert done.state == JobState.JOB_STATE_MERGING
    assert (done.synced, done.unchanged, done.failed) == (1, 1, 1)
    assert [(f.repository, f.reason) for f in done.failures] == [
        ("owner/repo-1", "the source refused it")
    ]
    merges = await job.merges()
    assert [msg_id for msg_id, _ in merges] == [merge_msg_id(job.id)]
    assert [(m.meta.job_id, m.user, m.total) for _, m in merges] == [(job.id, job.user, 3)]


async def test_a_redelivered_outcome_counts_once_and_the_first_one_stays(open_job: OpenJob) -> None:
    job = await open_job(2)
    await job.fanin.record(job.id, job.user, [outcome(0)])
    # A redelivery that failed this time (the dead-letter hook of a late replica, say).
    await job.fanin.record(job.id, job.user, [outcome(0, RepoStatus.REPO_STATUS_FAILED)])
    counted = await job.record()
    assert (counted.synced, counted.failed, counted.state) == (1, 0, JobState.JOB_STATE_SYNCING)
    assert await job.fanin.stored(job.id, 0) == outcome(0)

    await job.fanin.record(job.id, job.user, [outcome(1)])
    for _ in range(3):  # every outcome again, after the job completed
        await job.fanin.record(job.id, job.user, [outcome(0), outcome(1)])
    done = await job.record()
    assert (done.synced, done.failed, done.state) == (2, 0, JobState.JOB_STATE_MERGING)
    assert len(await job.merges()) == 1


async def test_an_outcome_beyond_the_job_is_not_counted(open_job: OpenJob) -> None:
    job = await open_job(1)
    await job.fanin.record(job.id, job.user, [outcome(1), outcome(8)])
    record = await job.record()
    assert (record.synced, record.state) == (0, JobState.JOB_STATE_SYNCING)
    assert await job.merges() == []


async def test_a_cancelled_job_counts_nothing_and_never_merges(open_job: OpenJob) -> None:
    job = await open_job(1)
    await job.fanin.jobs.end(
        job.id, JobState.JOB_STATE_CANCELLED, "cancelled", code=job_pb2.ERROR_CODE_CANCELLED
    )
    await job.fanin.record(job.id, job.user, [outcome(0)])
    record = await job.record()
    assert (record.synced, record.state) == (0, JobState.JOB_STATE_CANCELLED)
    assert await job.merges() == []


async def test_many_workers_recording_at_once_count_each_repository_once(
    js: JetStreamContext, open_job: OpenJob
) -> None:
    total = 120
    job = await open_job(total)
    replicas = [await replica(js) for _ in range(4)]
    statuses = (
        RepoStatus.REPO_STATUS_SYNCED,
        RepoStatus.REPO_STATUS_UNCHANGED,
        RepoStatus.REPO_STATUS_FAILED,
    )
    # Each repository recorded by two replicas (a redelivery racing the first delivery).
    calls = [
        replicas[(i + k) % len(replicas)].record(job.id, job.user, [outcome(i, statuses[i % 3])])
        for i in range(total)
        for k in (0, 1)
    ]
    await asyncio.gather(*calls)

    done = await job.record()
    assert done.state == JobState.JOB_STATE_MERGING
    assert (done.synced, done.unchanged, done.failed) == (40, 40, 40)
    assert (await job.fanin.jobs.get(job.id))[0].counted == b"\xff" * (total // 8)
    merges = await job.merges()
    assert [(m.meta.job_id, m.total) for _, m in merges] == [(job.id, total)]
