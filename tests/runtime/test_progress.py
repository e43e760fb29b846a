"""What the CLI prints when a job ends badly: the caller's message and the stable reason."""

from __future__ import annotations

from contextmesh.job.v1 import job_pb2

from meshctl.progress import summary
from meshkit.job_errors import end_with_error

JobState = job_pb2.JobState


def test_a_failed_job_shows_its_message_and_reason() -> None:
    job = job_pb2.Job(id="01ARZ3NDEKTSV4RRFFQ69G5FAV", user="nobody-here")
    end_with_error(
        job,
        JobState.JOB_STATE_FAILED,
        "no GitHub user or organisation is named nobody-here; check the name",
        code=job_pb2.ERROR_CODE_USER_NOT_FOUND,
    )

    assert summary(job).splitlines() == [
        "Job 01ARZ3NDEKTSV4RRFFQ69G5FAV: Failed",
        "  error: no GitHub user or organisation is named nobody-here; check the name"
        " [USER_NOT_FOUND]",
    ]


def test_a_job_recorded_before_error_status_still_shows_its_error() -> None:
    job = job_pb2.Job(
        id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
        state=JobState.JOB_STATE_CANCELLED,
        error="cancelled by a caller",
        error_code=job_pb2.ERROR_CODE_CANCELLED,
    )

    assert summary(job).splitlines()[-1] == "  error: cancelled by a caller"


def test_a_job_that_did_not_fail_shows_no_error() -> None:
    job = job_pb2.Job(id="01ARZ3NDEKTSV4RRFFQ69G5FAV", state=JobState.JOB_STATE_DONE)

    assert "error" not in summary(job)
