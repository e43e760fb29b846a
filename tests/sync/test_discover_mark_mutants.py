"""Discovery claims only a QUEUED job: a redelivered discovery of a job already past QUEUED
reports no change, so JobStore.update writes nothing and watchers see no spurious update.

Written against a mutant tools/mutation.py found surviving (docs/testing.md).
"""

from __future__ import annotations

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2

from syncsvc.handler import _mark_discovering

JobState = job_pb2.JobState


def _record(state: int) -> job_record_pb2.JobRecord:
    record = job_record_pb2.JobRecord()
    record.job.state = state
    return record


def test_a_queued_job_becomes_discovering() -> None:
    record = _record(JobState.JOB_STATE_QUEUED)

    assert _mark_discovering(record)
    assert record.job.state == JobState.JOB_STATE_DISCOVERING


@pytest.mark.parametrize(
    "state",
    [
        JobState.JOB_STATE_DISCOVERING,
        JobState.JOB_STATE_SYNCING,
        JobState.JOB_STATE_MERGING,
        JobState.JOB_STATE_CANCELLED,
    ],
)
def test_a_job_past_queued_is_left_as_it_is_and_not_rewritten(state: int) -> None:
    record = _record(state)

    assert not _mark_discovering(record)
    assert record.job.state == state
