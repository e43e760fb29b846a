"""How a job says why it failed or was cancelled: Job.error_status.

It is a google.rpc.Status, as a long-running operation's error is: a google.rpc.Code for
generic clients, a message written for the caller, and a google.rpc.ErrorInfo whose reason
is the job's ErrorCode, the stable form to branch on. The v1 fields it replaces, error and
error_code, are filled alongside until v2 removes them (docs/architecture.md, Contracts).
"""

from __future__ import annotations

from contextmesh.job.v1 import job_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = ["ERROR_DOMAIN", "end_with_error", "error_reason", "error_status"]

ERROR_DOMAIN = "contextmesh.job.v1"
"""The ErrorInfo domain of every job error: the package whose ErrorCode names the reasons."""

ErrorCode = job_pb2.ErrorCode

_RPC_CODE_OF: dict[int, int] = {
    ErrorCode.ERROR_CODE_USER_NOT_FOUND: code_pb2.NOT_FOUND,
    ErrorCode.ERROR_CODE_SOURCE_REFUSED: code_pb2.FAILED_PRECONDITION,
    ErrorCode.ERROR_CODE_DISCOVERY_FAILED: code_pb2.UNAVAILABLE,
    ErrorCode.ERROR_CODE_MERGE_FAILED: code_pb2.INTERNAL,
    ErrorCode.ERROR_CODE_STALLED: code_pb2.DEADLINE_EXCEEDED,
    ErrorCode.ERROR_CODE_QUEUE_UNAVAILABLE: code_pb2.UNAVAILABLE,
    ErrorCode.ERROR_CODE_CANCELLED: code_pb2.CANCELLED,
}


def error_status(code: int, message: str) -> status_pb2.Status:
    """The Status of a job that ended with ErrorCode `code`; `message` is for the caller."""
    reason = ErrorCode.Name(code).removeprefix("ERROR_CODE_")
    status = status_pb2.Status(code=_RPC_CODE_OF.get(code, code_pb2.UNKNOWN), message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    return status


def end_with_error(job: job_pb2.Job, state: int, message: str, *, code: int) -> None:
    """End `job` in `state` (FAILED or CANCELLED) for `message` with ErrorCode `code`."""
    job.state = state  # type: ignore[assignment]
    job.error_status.CopyFrom(error_status(code, message))
    # The deprecated v1 fields, for clients that do not read error_status yet.
    job.error = message
    job.error_code = code  # type: ignore[assignment]


def error_reason(job: job_pb2.Job) -> str:
    """The ErrorInfo reason of the job's error_status (USER_NOT_FOUND); empty when it has none."""
    for detail in job.error_status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return info.reason
    return ""
