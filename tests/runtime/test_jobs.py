"""The job record: compare-and-set updates, coalesced updates, and watching."""

from __future__ import annotations

import asyncio

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from google.rpc import code_pb2, error_details_pb2
from nats.js import JetStreamContext

from meshkit.domain.ids import new_job_id
from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore

JobState = job_pb2.JobState


async def new_job(store: JobStore) -> str:
    record = job_record_pb2.JobRecord()
    record.job.id, record.job.user, record.job.state = (
        new_job_id(),
        "alice",
        JobState.JOB_STATE_SYNCING,
    )
    record.job.total = 1000
    await store.create(record)
    return record.job.id


def add_one(record: job_record_pb2.JobRecord) -> bool:
    record.job.synced += 1
    return True


async def test_concurrent_updates_lose_nothing(js: JetStreamContext) -> None:
    store = await JobStore.open(js)
    job_id = await new_job(store)
    await asyncio.gather(*(store.update(job_id, add_one) for _ in range(50)))
    record, _ = await store.get(job_id)
    assert record.job.synced == 50


async def test_applied_updates_are_coalesced_into_few_writes(js: JetStreamContext) -> None:
    store = await JobStore.open(js)
    job_id = await new_job(store)
    _, before = await store.get(job_id)
    results = await asyncio.gather(*(store.apply(job_id, add_one) for _ in range(200)))
    record, after = await store.get(job_id)
    assert record.job.synced == 200
    assert all(r.job.synced >= 1 for r in results)
    assert after - before < 50  # revisions: far fewer writes than mutations


async def test_a_mutation_that_changes_nothing_writes_nothing(js: JetStreamContext) -> None:
    store = await JobStore.open(js)
    job_id = await new_job(store)
    _, before = await store.get(job_id)
    await store.update(job_id, lambda record: False)
    _, after = await store.get(job_id)
    assert after == before


async def test_missing_jobs_raise_job_not_found(js: JetStreamContext) -> None:
    store = await JobStore.open(js)
    with pytest.raises(JobNotFoundError):
        await store.get(new_job_id())
    with pytest.raises(JobNotFoundError):
        async for _ in store.watch(new_job_id()):
            pass


async def test_end_says_why_as_a_status_with_the_reason_and_the_v1_fields(
    js: JetStreamContext,
) -> None:
    store = await JobStore.open(js)
    job_id = await new_job(store)
    message = "no GitHub user or organisation is named alice; check the name"

    ended = await store.end(
        job_id, JobState.JOB_STATE_FAILED, message, code=job_pb2.ERROR_CODE_USER_NOT_FOUND
    )

    assert ended is not None and ended.job.state == JobState.JOB_STATE_FAILED
    status = ended.job.error_status
    assert (status.code, status.message) == (code_pb2.NOT_FOUND, message)
    [detail] = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert (info.reason, info.domain) == ("USER_NOT_FOUND", "contextmesh.job.v1")
    # v1 clients that read the deprecated fields see what they always did.
    assert ended.job.error == message
    assert ended.job.error_code == job_pb2.ERROR_CODE_USER_NOT_FOUND
    stored, _ = await store.get(job_id)
    assert stored.job == ended.job


async def test_end_leaves_an_ended_job_as_it_ended(js: JetStreamContext) -> None:
    store = await JobStore.open(js)
    job_id = await new_job(store)
    await store.end(
        job_id,
        JobState.JOB_STATE_CANCELLED,
        "cancelled by a caller",
        code=job_pb2.ERROR_CODE_CANCELLED,
    )

    later = await store.end(
        job_id, JobState.JOB_STATE_FAILED, "stalled", code=job_pb2.ERROR_CODE_STALLED
    )

    assert later is not None and later.job.state == JobState.JOB_STATE_CANCELLED
    assert later.job.error_status.code == code_pb2.CANCELLED
    assert later.job.error_status.message == "cancelled by a caller"


async def test_watch_replays_the_current_state_then_changes_then_ends(js: JetStreamContext) -> None:
    store = await JobStore.open(js)
    job_id = await new_job(store)
    await store.update(job_id, add_one)

    async def finish() -> None:
        await store.update(job_id, add_one)

        def done(record: job_record_pb2.JobRecord) -> bool:
            record.job.state = JobState.JOB_STATE_DONE
            return True

        await store.update(job_id, done)

    # The changes start once the watch has replayed the current state, not after a guess.
    seen: list[tuple[int, int]] = []
    changes: asyncio.Task[None] | None = None
    async for job in store.watch(job_id):
        seen.append((job.synced, job.state))
        changes = changes or asyncio.create_task(finish())
    assert changes is not None
    await changes
    assert seen[0] == (1, JobState.JOB_STATE_SYNCING)
    assert seen[-1][1] == JobState.JOB_STATE_DONE
    record, _ = await store.get(job_id)
    assert record.job.end_time.seconds > 0  # a final state is stamped with its end time
