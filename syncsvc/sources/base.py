"""What syncsvc needs from a place that holds repositories (GitHub, a local folder).

A source lists a user's repositories with a fingerprint each, and fetches the files of one
repository. It does not parse them: syncsvc reads `.repo-context.json` tolerantly itself.
Errors a source raises:
    UserNotFoundError   the user or organisation does not exist (the job fails, clearly)
    SourceError         anything else; `transient` says whether a retry may help
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

__all__ = [
    "CachedResponse",
    "FetchedFile",
    "FetchedRepo",
    "MemoryResponseCache",
    "RepoListing",
    "ResponseCache",
    "Source",
    "SourceError",
    "UserNotFoundError",
]


@dataclass(frozen=True)
class RepoListing:
    """One repository as the listing shows it."""

    full_name: str
    """owner/name, as the source spells it now (after any rename)."""
    fingerprint: str
    """Changes whenever the repository's content may have changed (pushed_at, HEAD, hash)."""
    default_branch: str = "main"
    description: str | None = None
    language: str | None = None
    topics: tuple[str, ...] = ()
    homepage: str | None = None
    url: str | None = None
    private: bool = False


@dataclass(frozen=True)
class FetchedFile:
    """A file read from a repository. status is 'ok', 'missing', 'too_large' or 'not_modified'
    (a 304 whose cached body is in data)."""

    path: str
    status: str
    data: bytes | None = None
    size: int = 0


@dataclass(frozen=True)
class FetchedRepo:
    """The files of one repository."""

    context: FetchedFile
    """.repo-context.json."""
    readme: FetchedFile
    """The README, whatever its name; path says which."""
    extra: tuple[FetchedFile, ...] = ()
    """The configured extra files, in the configured order."""
    warnings: tuple[str, ...] = field(default=())


class SourceError(Exception):
    """A source call failed. Its message is safe to log and show: it never holds a token.

    `retry_after_s` is set when the source was asked to wait longer than a worker should
    hold a task (a rate limit until its reset): the task goes back to the queue until then.
    """

    def __init__(
        self, message: str, *, transient: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after_s = retry_after_s


class UserNotFoundError(SourceError):
    """The user or organisation does not exist at the source."""

    def __init__(self, user: str) -> None:
        super().__init__(f"user or organisation {user!r} not found", transient=False)
        self.user = user


class Source(abc.ABC):
    """A place that holds users' repositories."""

    @abc.abstractmethod
    async def list_repositories(self, user: str) -> list[RepoListing]:
        """Every repository of the user or organisation, in any order."""

    @abc.abstractmethod
    async def fetch(
        self,
        repo: RepoListing,
        *,
        extra_files: tuple[str, ...],
        max_file_bytes: int,
    ) -> FetchedRepo:
        """Read .repo-context.json, the README and the extra files of one repository. A
        missing file is status 'missing', a file over max_file_bytes 'too_large' (not read)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


@dataclass(frozen=True)
class CachedResponse:
    """A remembered response body and the ETag that validates it."""

    etag: str
    body: bytes


class ResponseCache(abc.ABC):
    """Remembers ETags and bodies across workers, so a 304 can stand in for the body."""

    @abc.abstractmethod
    async def get(self, url: str) -> CachedResponse | None:
        """The remembered response for url (no query secrets in it), or None."""

    @abc.abstractmethod
    async def put(self, url: str, response: CachedResponse) -> None:
        """Remember a response; a later put for the same url replaces it."""


class MemoryResponseCache(ResponseCache):
    """A per-process cache: for tests and one-off tools."""

    def __init__(self) -> None:
        self._entries: dict[str, CachedResponse] = {}

    async def get(self, url: str) -> CachedResponse | None:
        return self._entries.get(url)

    async def put(self, url: str, response: CachedResponse) -> None:
        self._entries[url] = response
