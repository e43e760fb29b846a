"""Every way a job can fail has a google.rpc.Code and a reason a client can branch on."""

from __future__ import annotations

import pytest
from contextmesh.job.v1 import job_pb2
from google.rpc import code_pb2

from meshkit.job_errors import error_reason, error_status

FAILURES = [v.number for v in job_pb2.ErrorCode.DESCRIPTOR.values if v.number]


@pytest.mark.parametrize("code", FAILURES, ids=job_pb2.ErrorCode.Name)
def test_each_error_code_has_a_specific_rpc_code_and_its_own_reason(code: int) -> None:
    status = error_status(code, "what the caller reads")

    assert status.code not in (code_pb2.OK, code_pb2.UNKNOWN)
    assert status.message == "what the caller reads"
    job = job_pb2.Job(error_status=status)
    assert f"ERROR_CODE_{error_reason(job)}" == job_pb2.ErrorCode.Name(code)


def test_a_job_without_error_status_has_no_reason() -> None:
    assert error_reason(job_pb2.Job(error="cancelled by a caller")) == ""
