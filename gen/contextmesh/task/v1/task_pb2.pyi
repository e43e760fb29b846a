import datetime

from contextmesh._vendor.buf.validate import validate_pb2 as _validate_pb2
from contextmesh.validate.v1 import rules_pb2 as _rules_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskMeta(_message.Message):
    __slots__ = ("job_id", "task_id", "attempt", "enqueue_time")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ENQUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_id: str
    attempt: int
    enqueue_time: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., enqueue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("subject", "payload", "reason", "deliveries", "job_id", "msg_id")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    subject: str
    payload: bytes
    reason: str
    deliveries: int
    job_id: str
    msg_id: str
    def __init__(self, subject: _Optional[str] = ..., payload: _Optional[bytes] = ..., reason: _Optional[str] = ..., deliveries: _Optional[int] = ..., job_id: _Optional[str] = ..., msg_id: _Optional[str] = ...) -> None: ...
