"""The sweeper ends jobs that can no longer finish, and only those."""

from __future__ import annotations

import time

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from google.rpc import code_pb2
from prometheus_client import REGISTRY

from gateway.sweeper import JobSweeper
from meshkit.config import JobSettings
from meshkit.job_errors import error_reason
from meshkit.topology import DISCOVER
from tests.gateway.conftest import Gateway

JobState = job_pb2.JobState
SETTINGS = JobSettings(stall_s=60, training_stall_s=600, sweep_interval_s=1)


@pytest.fixture
def own(gateway: Gateway) -> Gateway:
    """The gateway over the test's own server: a sweep reads every job in the bucket."""
    return gateway


def ready(record: job_record_pb2.JobRecord) -> bool:
    record.job.state = JobState.JOB_STATE_BUNDLE_READY
    record.job.bundle.content_hash = "cd" * 32
    record.job.training.state = job_pb2.TRAINING_STATE_QUEUED
    return True


async def test_a_job_whose_tasks_were_purged_ends_failed_and_stops_coalescing(
    own: Gateway,
) -> None:
    sweeper = JobSweeper(own.jobs, SETTINGS)
    lost, _ = await own.refresher.refresh("alice", force=False)
    await own.js.purge_stream(DISCOVER.stream)  # its discover task is gone for good
    assert await sweeper.sweep() == []  # not stalled yet: it only just moved

    ended = await sweeper.sweep(now=time.time() + SETTINGS.stall_s + 1)

    assert ended == [lost.id]
    record, _ = await own.jobs.get(lost.id)
    assert record.job.state == JobState.JOB_STATE_FAILED
    status = record.job.error_status
    assert status.code == code_pb2.DEADLINE_EXCEEDED
    assert "no progress" in status.message and "refresh again" in status.message
    assert error_reason(record.job) == "STALLED"
    assert record.job.error == status.message  # the deprecated v1 fields, filled alongside
    assert record.job.error_code == job_pb2.ERROR_CODE_STALLED
    assert record.job.HasField("end_time")
    fresh, coalesced = await own.refresher.refresh("alice", force=False)
    assert not coalesced and fresh.id != lost.id


async def test_a_stalled_training_ends_done_with_its_bundle(own: Gateway) -> None:
    sweeper = JobSweeper(own.jobs, SETTINGS)
    job, _ = await own.refresher.refresh("bob", force=False)
    await own.jobs.update(job.id, ready)
    # Past the refresh stall but within the training one: a training may wait its turn.
    assert await sweeper.sweep(now=time.time() + SETTINGS.stall_s + 1) == []

    assert await sweeper.sweep(now=time.time() + SETTINGS.training_stall_s + 1) == [job.id]
    record, _ = await own.jobs.get(job.id)
    assert record.job.state == JobState.JOB_STATE_DONE
    assert record.job.training.state == job_pb2.TRAINING_STATE_FAILED
    assert "training made no progress" in record.job.training.reason
    assert record.job.bundle.content_hash == "cd" * 32
    assert not record.job.HasField("error_status") and not record.job.error


async def test_final_jobs_are_left_alone(own: Gateway) -> None:
    sweeper = JobSweeper(own.jobs, SETTINGS)
    done, _ = await own.refresher.refresh("carol", force=False)
    await own.jobs.end(
        done.id,
        JobState.JOB_STATE_CANCELLED,
        "cancelled by a caller",
        code=job_pb2.ERROR_CODE_CANCELLED,
    )
    later = time.time() + SETTINGS.training_stall_s + 1
    assert await sweeper.sweep(now=later) == []
    record, _ = await own.jobs.get(done.id)
    assert record.job.state == JobState.JOB_STATE_CANCELLED
    assert record.job.error_status.message == "cancelled by a caller"


async def test_a_sweep_exports_how_many_jobs_run_and_how_old_the_oldest_is(own: Gateway) -> None:
    sweeper = JobSweeper(own.jobs, SETTINGS)
    first, _ = await own.refresher.refresh("dave", force=False)
    await own.refresher.refresh("erin", force=False)
    ended, _ = await own.refresher.refresh("frank", force=False)
    await own.jobs.end(ended.id, JobState.JOB_STATE_CANCELLED, "cancelled", code=0)
    now = time.time() + 30  # within the stall limit: nothing is ended

    assert await sweeper.sweep(now=now) == []

    assert REGISTRY.get_sample_value("contextmesh_jobs_running") == 2
    oldest = REGISTRY.get_sample_value("contextmesh_job_oldest_running_age_seconds")
    assert oldest == pytest.approx(now - first.create_time.ToNanoseconds() / 1e9)
    await own.jobs.end(first.id, JobState.JOB_STATE_CANCELLED, "cancelled", code=0)
    await sweeper.sweep(now=now)
    assert REGISTRY.get_sample_value("contextmesh_jobs_running") == 1
