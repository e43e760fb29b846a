"""The errors the runtime raises to its callers, in one hierarchy rooted at MeshError.

    MeshError                     catch to handle any contextmesh error
    ├── ConfigError               an environment variable is missing or malformed; names it
    │   └── NatsAuthError         (meshkit.nats_client) NATS refused the configured identity
    ├── BlobError                 a blob store call failed
    │   ├── BlobNotFoundError     the key holds no object
    │   ├── BlobExistsError       a create-only write found the key taken
    │   ├── InvalidBlobKeyError   the key is not a safe blob key
    │   └── BlobUnavailableError  the store could not be reached after retries (transient)
    ├── JobNotFoundError          no job record has that id
    ├── ConflictError             a compare-and-set lost too many times in a row
    ├── StreamFullError           a work stream is at its bound and refused a new task
    ├── LimitExceeded             a caller asked for more than its share; says when to retry
    ├── Unauthenticated           (meshkit.auth) credentials missing or not verifying
    └── NotFound, InvalidArgument, FailedPrecondition
                                  (meshkit.rpc) a servicer's answer, mapped to a gRPC status

The local-stack tooling (meshctl) derives its errors from MeshError too. A call made wrongly
(an argument out of range, a function used outside its context) raises ValueError or
RuntimeError as any Python library would. Two exceptions are
signals, not errors: a handler raises `meshkit.worker.PermanentError` or `RetryLater` to tell
its Worker what to do with a task; they never leave the Worker.

Messages never carry secrets: callers may log them and return them to clients as they are.
"""

from __future__ import annotations

__all__ = [
    "BlobError",
    "BlobExistsError",
    "BlobNotFoundError",
    "BlobUnavailableError",
    "ConfigError",
    "ConflictError",
    "InvalidBlobKeyError",
    "JobNotFoundError",
    "LimitExceeded",
    "MeshError",
    "StreamFullError",
]


class MeshError(Exception):
    """Base of every contextmesh error."""


class ConfigError(MeshError):
    """An environment variable is missing or malformed. Raised at start-up, never later."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class BlobError(MeshError):
    """A blob store call failed."""


class BlobNotFoundError(BlobError):
    """The key holds no object. Catch it where a missing object is an expected answer."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no blob at {key!r}")
        self.key = key


class BlobExistsError(BlobError):
    """A create-only write found the key already taken. For content-addressed keys this
    means the same bytes are already stored, which callers usually treat as success."""

    def __init__(self, key: str) -> None:
        super().__init__(f"blob {key!r} already exists")
        self.key = key


class InvalidBlobKeyError(BlobError, ValueError):
    """The key could escape its prefix or is not portable across backends."""


class BlobUnavailableError(BlobError):
    """The store kept failing with transient errors after every retry."""


class JobNotFoundError(MeshError):
    """No job record has that id (it never existed, or it expired)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class ConflictError(MeshError):
    """A compare-and-set update lost to concurrent writers more times than allowed."""


class StreamFullError(MeshError):
    """A stream holds its maximum bytes (or messages): it refused a new task, and kept every
    task it had accepted (work streams discard new)."""


class LimitExceeded(MeshError):
    """A caller went past a limit of the edge (refresh rate, open watches).

    `retry_after_s` is how long until the call would be accepted, when that is known (a
    rate); None when it depends on other calls ending (concurrent watches).
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
