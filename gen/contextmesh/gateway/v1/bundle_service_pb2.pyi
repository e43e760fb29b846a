import datetime

from contextmesh._vendor.buf.validate import validate_pb2 as _validate_pb2
from contextmesh.bundle.v1 import bundle_pb2 as _bundle_pb2
from contextmesh.job.v1 import job_pb2 as _job_pb2
from contextmesh.notify.v1 import callback_pb2 as _callback_pb2
from contextmesh.schedule.v1 import schedule_pb2 as _schedule_pb2
from contextmesh.search.v1 import search_pb2 as _search_pb2
from contextmesh.validate.v1 import rules_pb2 as _rules_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RefreshBundleRequest(_message.Message):
    __slots__ = ("user", "force")
    USER_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    user: str
    force: bool
    def __init__(self, user: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class RefreshBundleResponse(_message.Message):
    __slots__ = ("job", "coalesced", "status_url")
    JOB_FIELD_NUMBER: _ClassVar[int]
    COALESCED_FIELD_NUMBER: _ClassVar[int]
    STATUS_URL_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    coalesced: bool
    status_url: str
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., coalesced: _Optional[bool] = ..., status_url: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("user", "page_size", "page_token")
    USER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user: str
    page_size: int
    page_token: str
    def __init__(self, user: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_job_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_job_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRefreshStatusRequest(_message.Message):
    __slots__ = ("user", "job_id")
    USER_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    user: str
    job_id: str
    def __init__(self, user: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class GetRefreshStatusResponse(_message.Message):
    __slots__ = ("job", "progress")
    JOB_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    progress: str
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., progress: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job", "final", "bundle_ready")
    JOB_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_READY_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    final: bool
    bundle_ready: bool
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., final: _Optional[bool] = ..., bundle_ready: _Optional[bool] = ...) -> None: ...

class GetBundleRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class GetBundleResponse(_message.Message):
    __slots__ = ("user", "bundle", "job_id", "create_time", "repositories", "download_path")
    USER_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_PATH_FIELD_NUMBER: _ClassVar[int]
    user: str
    bundle: _job_pb2.BundleRef
    job_id: str
    create_time: _timestamp_pb2.Timestamp
    repositories: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.RepoEntry]
    download_path: str
    def __init__(self, user: _Optional[str] = ..., bundle: _Optional[_Union[_job_pb2.BundleRef, _Mapping]] = ..., job_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., repositories: _Optional[_Iterable[_Union[_bundle_pb2.RepoEntry, _Mapping]]] = ..., download_path: _Optional[str] = ...) -> None: ...

class DownloadBundleRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class SearchBundleRequest(_message.Message):
    __slots__ = ("user", "query", "top_k")
    USER_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    user: str
    query: str
    top_k: int
    def __init__(self, user: _Optional[str] = ..., query: _Optional[str] = ..., top_k: _Optional[int] = ...) -> None: ...

class SearchBundleResponse(_message.Message):
    __slots__ = ("hits", "bundle_hash", "tuned")
    HITS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_HASH_FIELD_NUMBER: _ClassVar[int]
    TUNED_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_search_pb2.SearchHit]
    bundle_hash: str
    tuned: bool
    def __init__(self, hits: _Optional[_Iterable[_Union[_search_pb2.SearchHit, _Mapping]]] = ..., bundle_hash: _Optional[str] = ..., tuned: _Optional[bool] = ...) -> None: ...

class SetScheduleRequest(_message.Message):
    __slots__ = ("user", "interval")
    USER_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    user: str
    interval: _duration_pb2.Duration
    def __init__(self, user: _Optional[str] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SetScheduleResponse(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: _schedule_pb2.Schedule
    def __init__(self, schedule: _Optional[_Union[_schedule_pb2.Schedule, _Mapping]] = ...) -> None: ...

class GetScheduleRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class GetScheduleResponse(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: _schedule_pb2.Schedule
    def __init__(self, schedule: _Optional[_Union[_schedule_pb2.Schedule, _Mapping]] = ...) -> None: ...

class DeleteScheduleRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class DeleteScheduleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetCallbackRequest(_message.Message):
    __slots__ = ("user", "url")
    USER_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    user: str
    url: str
    def __init__(self, user: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class SetCallbackResponse(_message.Message):
    __slots__ = ("callback", "secret")
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    callback: _callback_pb2.Callback
    secret: str
    def __init__(self, callback: _Optional[_Union[_callback_pb2.Callback, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class GetCallbackRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class GetCallbackResponse(_message.Message):
    __slots__ = ("callback",)
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    callback: _callback_pb2.Callback
    def __init__(self, callback: _Optional[_Union[_callback_pb2.Callback, _Mapping]] = ...) -> None: ...

class DeleteCallbackRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: str
    def __init__(self, user: _Optional[str] = ...) -> None: ...

class DeleteCallbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
