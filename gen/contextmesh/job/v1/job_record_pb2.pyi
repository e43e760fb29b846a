from contextmesh.job.v1 import job_pb2 as _job_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobRecord(_message.Message):
    __slots__ = ("job", "counted", "base_bundle_hash", "merges")
    JOB_FIELD_NUMBER: _ClassVar[int]
    COUNTED_FIELD_NUMBER: _ClassVar[int]
    BASE_BUNDLE_HASH_FIELD_NUMBER: _ClassVar[int]
    MERGES_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    counted: bytes
    base_bundle_hash: str
    merges: int
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., counted: _Optional[bytes] = ..., base_bundle_hash: _Optional[str] = ..., merges: _Optional[int] = ...) -> None: ...
