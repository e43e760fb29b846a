"""The body of a notification: a job's end, as JobEndedEvent in compact JSON."""

from __future__ import annotations

import json

from contextmesh.job.v1 import job_pb2
from contextmesh.notify.v1 import event_pb2
from google.protobuf import json_format

from meshkit.job_errors import error_reason

__all__ = ["event_body", "job_ended_event"]


def job_ended_event(job: job_pb2.Job) -> event_pb2.JobEndedEvent:
    """What the user is told about a job that ended."""
    event = event_pb2.JobEndedEvent(
        job_id=job.id,
        user=job.user,
        state=job.state,
        total=job.total,
        synced=job.synced,
        unchanged=job.unchanged,
        failed=job.failed,
        bundle_hash=job.bundle.content_hash,
        training=job.training,
        error_reason=error_reason(job),
        error_message=job.error_status.message,
    )
    event.create_time.CopyFrom(job.create_time)
    if job.HasField("end_time"):
        event.end_time.CopyFrom(job.end_time)
    return event


def event_body(event: event_pb2.JobEndedEvent) -> bytes:
    """The JSON the receiver gets: camelCase names, every field present, keys sorted."""
    fields = json_format.MessageToDict(event, always_print_fields_with_no_presence=True)
    return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
