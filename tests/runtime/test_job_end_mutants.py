"""Ending a job: an ended job is not written again, `only_from` guards the state it ends
from, and an unknown job raises unless the caller says it may be missing.

Written against mutants tools/mutation.py found surviving in JobStore.end (docs/testing.md).
"""

from __future__ import annotations

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from nats.js import JetStreamContext

from meshkit.domain.ids import new_job_id
from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore

JobState = job_pb2.JobState


async def _syncing_job(store: JobStore) -> str:
    record = job_record_pb2.JobRecord()
    record.job.id, record.job.user = new_job_id(), "alice"
    record.job.state = JobState.JOB_STATE_SYNCING
    await store.create(record)
    return record.job.id


async def _cancel(store: JobStore, job_id: str, **options: bool) -> job_record_pb2.JobRecord | None:
    return await store.end(
        job_id,
        JobState.JOB_STATE_CANCELLED,
        "cancelled",
        code=job_pb2.ERROR_CODE_CANCELLED,
        **options,
    )


async def test_ending_an_ended_job_writes_nothing(js: JetStreamContext) -> None:
    store = await JobStore.open(js)
    job_id = await _syncing_job(store)
    await _cancel(store, job_id)
    _, revision = await store.get(job_id)

    await store.end(job_id, JobState.JOB_STATE_FAILED, "late", code=job_pb2.ERROR_CODE_STALLED)

    assert (await store.get(job_id))[1] == revision


async def test_only_from_leaves_a_job_in_another_state_as_it_is(js: JetStreamContext) -> None:
    store = await JobStore.open(js)
    job_id = await _syncing_job(store)

    await store.end(
        job_id,
        JobState.JOB_STATE_FAILED,
        "merge failed",
        code=job_pb2.ERROR_CODE_MERGE_FAILED,
        only_from=frozenset({JobState.JOB_STATE_MERGING}),
    )

    assert (await store.get(job_id))[0].job.state == JobState.JOB_STATE_SYNCING


async def test_an_unknown_job_raises_unless_it_may_be_missing(js: JetStreamContext) -> None:
    store = await JobStore.open(js)
    unknown = new_job_id()

    with pytest.raises(JobNotFoundError):
        await _cancel(store, unknown)
    assert await _cancel(store, unknown, missing_ok=True) is None
