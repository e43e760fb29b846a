import datetime

from contextmesh.job.v1 import job_pb2 as _job_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RepoEntry(_message.Message):
    __slots__ = ("repository", "fingerprint", "status", "warnings", "reason", "result_key")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESULT_KEY_FIELD_NUMBER: _ClassVar[int]
    repository: str
    fingerprint: str
    status: _job_pb2.RepoStatus
    warnings: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    result_key: str
    def __init__(self, repository: _Optional[str] = ..., fingerprint: _Optional[str] = ..., status: _Optional[_Union[_job_pb2.RepoStatus, str]] = ..., warnings: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., result_key: _Optional[str] = ...) -> None: ...

class BundleIndex(_message.Message):
    __slots__ = ("user", "content_hash", "repositories")
    USER_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    user: str
    content_hash: str
    repositories: _containers.RepeatedCompositeFieldContainer[RepoEntry]
    def __init__(self, user: _Optional[str] = ..., content_hash: _Optional[str] = ..., repositories: _Optional[_Iterable[_Union[RepoEntry, _Mapping]]] = ...) -> None: ...

class BundlePointer(_message.Message):
    __slots__ = ("bundle", "index_key", "job_id", "create_time")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    INDEX_KEY_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    bundle: _job_pb2.BundleRef
    index_key: str
    job_id: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, bundle: _Optional[_Union[_job_pb2.BundleRef, _Mapping]] = ..., index_key: _Optional[str] = ..., job_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModelPointer(_message.Message):
    __slots__ = ("model_key", "bundle_hash", "embeddings_key", "metrics", "base_metrics", "tuned", "create_time")
    MODEL_KEY_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_HASH_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_KEY_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BASE_METRICS_FIELD_NUMBER: _ClassVar[int]
    TUNED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    model_key: str
    bundle_hash: str
    embeddings_key: str
    metrics: _job_pb2.EvalMetrics
    base_metrics: _job_pb2.EvalMetrics
    tuned: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, model_key: _Optional[str] = ..., bundle_hash: _Optional[str] = ..., embeddings_key: _Optional[str] = ..., metrics: _Optional[_Union[_job_pb2.EvalMetrics, _Mapping]] = ..., base_metrics: _Optional[_Union[_job_pb2.EvalMetrics, _Mapping]] = ..., tuned: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
