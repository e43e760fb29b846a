from contextmesh._vendor.buf.validate import validate_pb2 as _validate_pb2
from contextmesh.job.v1 import job_pb2 as _job_pb2
from contextmesh.task.v1 import task_pb2 as _task_pb2
from contextmesh.validate.v1 import rules_pb2 as _rules_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DiscoverTask(_message.Message):
    __slots__ = ("meta", "user", "force", "resync")
    META_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    meta: _task_pb2.TaskMeta
    user: str
    force: bool
    resync: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, meta: _Optional[_Union[_task_pb2.TaskMeta, _Mapping]] = ..., user: _Optional[str] = ..., force: _Optional[bool] = ..., resync: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncRepoTask(_message.Message):
    __slots__ = ("meta", "user", "repository", "index", "fingerprint", "default_branch", "previous_result_key", "metadata")
    META_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BRANCH_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_RESULT_KEY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    meta: _task_pb2.TaskMeta
    user: str
    repository: str
    index: int
    fingerprint: str
    default_branch: str
    previous_result_key: str
    metadata: RepoMetadata
    def __init__(self, meta: _Optional[_Union[_task_pb2.TaskMeta, _Mapping]] = ..., user: _Optional[str] = ..., repository: _Optional[str] = ..., index: _Optional[int] = ..., fingerprint: _Optional[str] = ..., default_branch: _Optional[str] = ..., previous_result_key: _Optional[str] = ..., metadata: _Optional[_Union[RepoMetadata, _Mapping]] = ...) -> None: ...

class RepoMetadata(_message.Message):
    __slots__ = ("description", "language", "topics", "homepage", "url", "private")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    HOMEPAGE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    description: str
    language: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    homepage: str
    url: str
    private: bool
    def __init__(self, description: _Optional[str] = ..., language: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ..., homepage: _Optional[str] = ..., url: _Optional[str] = ..., private: _Optional[bool] = ...) -> None: ...

class RepoOutcome(_message.Message):
    __slots__ = ("repository", "index", "status", "fingerprint", "result_key", "reason", "warnings")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RESULT_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    repository: str
    index: int
    status: _job_pb2.RepoStatus
    fingerprint: str
    result_key: str
    reason: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, repository: _Optional[str] = ..., index: _Optional[int] = ..., status: _Optional[_Union[_job_pb2.RepoStatus, str]] = ..., fingerprint: _Optional[str] = ..., result_key: _Optional[str] = ..., reason: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...
