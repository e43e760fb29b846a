from contextmesh._vendor.buf.validate import validate_pb2 as _validate_pb2
from contextmesh.job.v1 import job_pb2 as _job_pb2
from contextmesh.validate.v1 import rules_pb2 as _rules_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ParkedTask(_message.Message):
    __slots__ = ("sequence", "subject", "job_id", "msg_id", "reason", "deliveries")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    subject: str
    job_id: str
    msg_id: str
    reason: str
    deliveries: int
    def __init__(self, sequence: _Optional[int] = ..., subject: _Optional[str] = ..., job_id: _Optional[str] = ..., msg_id: _Optional[str] = ..., reason: _Optional[str] = ..., deliveries: _Optional[int] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[ParkedTask]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[ParkedTask, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RedriveDeadLetterRequest(_message.Message):
    __slots__ = ("sequence",)
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    def __init__(self, sequence: _Optional[int] = ...) -> None: ...

class RedriveDeadLetterResponse(_message.Message):
    __slots__ = ("task", "job")
    TASK_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    task: ParkedTask
    job: _job_pb2.Job
    def __init__(self, task: _Optional[_Union[ParkedTask, _Mapping]] = ..., job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ("jobs", "blobs", "dead_letters")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    jobs: int
    blobs: int
    dead_letters: int
    def __init__(self, jobs: _Optional[int] = ..., blobs: _Optional[int] = ..., dead_letters: _Optional[int] = ...) -> None: ...

class CollectGarbageRequest(_message.Message):
    __slots__ = ("dry_run", "list_keys")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    LIST_KEYS_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    list_keys: bool
    def __init__(self, dry_run: _Optional[bool] = ..., list_keys: _Optional[bool] = ...) -> None: ...

class Garbage(_message.Message):
    __slots__ = ("kind", "count", "bytes", "keys")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    count: int
    bytes: int
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., count: _Optional[int] = ..., bytes: _Optional[int] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class CollectGarbageResponse(_message.Message):
    __slots__ = ("kinds", "spared", "dry_run")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SPARED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedCompositeFieldContainer[Garbage]
    spared: int
    dry_run: bool
    def __init__(self, kinds: _Optional[_Iterable[_Union[Garbage, _Mapping]]] = ..., spared: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...
