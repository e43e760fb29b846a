import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_DISCOVERING: _ClassVar[JobState]
    JOB_STATE_SYNCING: _ClassVar[JobState]
    JOB_STATE_MERGING: _ClassVar[JobState]
    JOB_STATE_BUNDLE_READY: _ClassVar[JobState]
    JOB_STATE_TRAINING: _ClassVar[JobState]
    JOB_STATE_DONE: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_USER_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_SOURCE_REFUSED: _ClassVar[ErrorCode]
    ERROR_CODE_DISCOVERY_FAILED: _ClassVar[ErrorCode]
    ERROR_CODE_MERGE_FAILED: _ClassVar[ErrorCode]
    ERROR_CODE_STALLED: _ClassVar[ErrorCode]
    ERROR_CODE_QUEUE_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_CANCELLED: _ClassVar[ErrorCode]

class RepoStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPO_STATUS_UNSPECIFIED: _ClassVar[RepoStatus]
    REPO_STATUS_SYNCED: _ClassVar[RepoStatus]
    REPO_STATUS_UNCHANGED: _ClassVar[RepoStatus]
    REPO_STATUS_FAILED: _ClassVar[RepoStatus]

class TrainingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_STATE_UNSPECIFIED: _ClassVar[TrainingState]
    TRAINING_STATE_DISABLED: _ClassVar[TrainingState]
    TRAINING_STATE_QUEUED: _ClassVar[TrainingState]
    TRAINING_STATE_RUNNING: _ClassVar[TrainingState]
    TRAINING_STATE_PUBLISHED: _ClassVar[TrainingState]
    TRAINING_STATE_NOT_IMPROVED: _ClassVar[TrainingState]
    TRAINING_STATE_SKIPPED: _ClassVar[TrainingState]
    TRAINING_STATE_FAILED: _ClassVar[TrainingState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_DISCOVERING: JobState
JOB_STATE_SYNCING: JobState
JOB_STATE_MERGING: JobState
JOB_STATE_BUNDLE_READY: JobState
JOB_STATE_TRAINING: JobState
JOB_STATE_DONE: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_USER_NOT_FOUND: ErrorCode
ERROR_CODE_SOURCE_REFUSED: ErrorCode
ERROR_CODE_DISCOVERY_FAILED: ErrorCode
ERROR_CODE_MERGE_FAILED: ErrorCode
ERROR_CODE_STALLED: ErrorCode
ERROR_CODE_QUEUE_UNAVAILABLE: ErrorCode
ERROR_CODE_CANCELLED: ErrorCode
REPO_STATUS_UNSPECIFIED: RepoStatus
REPO_STATUS_SYNCED: RepoStatus
REPO_STATUS_UNCHANGED: RepoStatus
REPO_STATUS_FAILED: RepoStatus
TRAINING_STATE_UNSPECIFIED: TrainingState
TRAINING_STATE_DISABLED: TrainingState
TRAINING_STATE_QUEUED: TrainingState
TRAINING_STATE_RUNNING: TrainingState
TRAINING_STATE_PUBLISHED: TrainingState
TRAINING_STATE_NOT_IMPROVED: TrainingState
TRAINING_STATE_SKIPPED: TrainingState
TRAINING_STATE_FAILED: TrainingState

class RepoFailure(_message.Message):
    __slots__ = ("repository", "reason")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    repository: str
    reason: str
    def __init__(self, repository: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EvalMetrics(_message.Message):
    __slots__ = ("mrr_at_10", "recall_at_1", "recall_at_5", "queries", "paraphrase_mrr_at_10", "paraphrase_queries")
    MRR_AT_10_FIELD_NUMBER: _ClassVar[int]
    RECALL_AT_1_FIELD_NUMBER: _ClassVar[int]
    RECALL_AT_5_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    PARAPHRASE_MRR_AT_10_FIELD_NUMBER: _ClassVar[int]
    PARAPHRASE_QUERIES_FIELD_NUMBER: _ClassVar[int]
    mrr_at_10: float
    recall_at_1: float
    recall_at_5: float
    queries: int
    paraphrase_mrr_at_10: float
    paraphrase_queries: int
    def __init__(self, mrr_at_10: _Optional[float] = ..., recall_at_1: _Optional[float] = ..., recall_at_5: _Optional[float] = ..., queries: _Optional[int] = ..., paraphrase_mrr_at_10: _Optional[float] = ..., paraphrase_queries: _Optional[int] = ...) -> None: ...

class TrainingStatus(_message.Message):
    __slots__ = ("state", "step", "total_steps", "attempt", "base", "tuned", "reason", "model_key")
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    TUNED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_KEY_FIELD_NUMBER: _ClassVar[int]
    state: TrainingState
    step: int
    total_steps: int
    attempt: int
    base: EvalMetrics
    tuned: EvalMetrics
    reason: str
    model_key: str
    def __init__(self, state: _Optional[_Union[TrainingState, str]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., attempt: _Optional[int] = ..., base: _Optional[_Union[EvalMetrics, _Mapping]] = ..., tuned: _Optional[_Union[EvalMetrics, _Mapping]] = ..., reason: _Optional[str] = ..., model_key: _Optional[str] = ...) -> None: ...

class BundleRef(_message.Message):
    __slots__ = ("content_hash", "blob_key", "repositories", "size_bytes")
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    BLOB_KEY_FIELD_NUMBER: _ClassVar[int]
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    content_hash: str
    blob_key: str
    repositories: int
    size_bytes: int
    def __init__(self, content_hash: _Optional[str] = ..., blob_key: _Optional[str] = ..., repositories: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "user", "state", "force", "total", "synced", "unchanged", "failed", "failures", "bundle", "training", "error", "create_time", "update_time", "end_time", "bundle_ready_time", "redrive", "error_code", "error_status", "resync")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_READY_TIME_FIELD_NUMBER: _ClassVar[int]
    REDRIVE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_STATUS_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    id: str
    user: str
    state: JobState
    force: bool
    total: int
    synced: int
    unchanged: int
    failed: int
    failures: _containers.RepeatedCompositeFieldContainer[RepoFailure]
    bundle: BundleRef
    training: TrainingStatus
    error: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bundle_ready_time: _timestamp_pb2.Timestamp
    redrive: Redrive
    error_code: ErrorCode
    error_status: _status_pb2.Status
    resync: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., user: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., force: _Optional[bool] = ..., total: _Optional[int] = ..., synced: _Optional[int] = ..., unchanged: _Optional[int] = ..., failed: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[RepoFailure, _Mapping]]] = ..., bundle: _Optional[_Union[BundleRef, _Mapping]] = ..., training: _Optional[_Union[TrainingStatus, _Mapping]] = ..., error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bundle_ready_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., redrive: _Optional[_Union[Redrive, _Mapping]] = ..., error_code: _Optional[_Union[ErrorCode, str]] = ..., error_status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., resync: _Optional[_Iterable[str]] = ...) -> None: ...

class Redrive(_message.Message):
    __slots__ = ("sequence", "stream", "job_id", "repository")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    stream: str
    job_id: str
    repository: str
    def __init__(self, sequence: _Optional[int] = ..., stream: _Optional[str] = ..., job_id: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...
