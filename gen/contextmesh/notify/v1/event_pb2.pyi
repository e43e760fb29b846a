import datetime

from contextmesh.job.v1 import job_pb2 as _job_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobEndedEvent(_message.Message):
    __slots__ = ("job_id", "user", "state", "total", "synced", "unchanged", "failed", "bundle_hash", "training", "error_reason", "error_message", "create_time", "end_time")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_HASH_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    user: str
    state: _job_pb2.JobState
    total: int
    synced: int
    unchanged: int
    failed: int
    bundle_hash: str
    training: _job_pb2.TrainingStatus
    error_reason: str
    error_message: str
    create_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., user: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., total: _Optional[int] = ..., synced: _Optional[int] = ..., unchanged: _Optional[int] = ..., failed: _Optional[int] = ..., bundle_hash: _Optional[str] = ..., training: _Optional[_Union[_job_pb2.TrainingStatus, _Mapping]] = ..., error_reason: _Optional[str] = ..., error_message: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
