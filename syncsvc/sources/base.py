"""What syncsvc needs from a place that holds repositories (GitHub, a local folder).

A source lists a user's repositories with a fingerprint each, and fetches the files of one
repository. It does not parse them: syncsvc reads `.repo-context.json` tolerantly itself.
Listings are made safe where they are built: every text field of a RepoListing is made
encodable (meshkit.text) and capped so that it fits the sync task (proto/contextmesh/sync),
whatever a source read. Errors a source raises:
    UserNotFoundError   the user or organisation does not exist (the job fails, clearly)
    SourceError         anything else; `transient` says whether a retry may help
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import re
from dataclasses import dataclass, field

from meshkit.domain.documents import RepositoryMetadata
from meshkit.text import encodable

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
    "is_valid_full_name",
]

# Caps on a listing's fields: what the sync task accepts (fingerprint, default_branch) and
# room enough for any real description, with the whole task far below NATS's 1 MiB.
MAX_FINGERPRINT = 200
MAX_BRANCH = 255
MAX_DESCRIPTION = 2000
MAX_LANGUAGE = 100
MAX_TOPICS = 20
MAX_TOPIC_CHARS = 200
MAX_URL = 2000

# owner/name as GitHub allows them: only these reach blob keys (repos/<owner>/<name>/...).
_FULL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")


def is_valid_full_name(full_name: str) -> bool:
    """owner/name with a GitHub account name and a repository name ('.' and '..' refused)."""
    return bool(_FULL_NAME.match(full_name)) and full_name.split("/")[1] not in (".", "..")


@dataclass(frozen=True)
class RepoListing:
    """One repository as the listing shows it."""

    full_name: str
    """owner/name, as the source spells it now (after any rename)."""
    fingerprint: str
    """Changes whenever the repository's content may have changed (pushed_at, HEAD, hash)."""
    default_branch: str = "main"
    metadata: RepositoryMetadata = field(default_factory=RepositoryMetadata)
    """What the listing says of the repository, as the repository result will hold it."""

    def __post_init__(self) -> None:
        """Make every field encodable and cap it, so that discovery's plan and sync task can
        always hold the listing. A fingerprint over the cap becomes its hash: still distinct,
        still stable."""
        fingerprint = encodable(self.fingerprint)
        if len(fingerprint) > MAX_FINGERPRINT:
            fingerprint = "sha256:" + hashlib.sha256(fingerprint.encode()).hexdigest()
        meta = self.metadata
        fields = {
            "full_name": encodable(self.full_name),
            "fingerprint": fingerprint,
            "default_branch": _capped(self.default_branch, MAX_BRANCH) or "main",
            "metadata": dataclasses.replace(
                meta,
                description=_capped(meta.description, MAX_DESCRIPTION),
                language=_capped(meta.language, MAX_LANGUAGE),
                topics=tuple(
                    topic
                    for topic in (_capped(t, MAX_TOPIC_CHARS) for t in meta.topics[:MAX_TOPICS])
                    if topic
                ),
                homepage=_capped(meta.homepage, MAX_URL),
                url=_capped(meta.url, MAX_URL),
            ),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)


def _capped(text: str | None, limit: int) -> str | None:
    return None if text is None else encodable(text)[:limit]


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
        super().__init__(encodable(message))  # it lands in outcomes (protobuf) and logs
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
        user: str | None = None,
    ) -> FetchedRepo:
        """Read .repo-context.json, the README and the extra files of one repository. A
        missing file is status 'missing', a file over max_file_bytes 'too_large' (not read).
        `user` is whom the repository is synced for: a source may read it with their own
        credential."""

    @abc.abstractmethod
    async def fetch_files(
        self,
        repo: RepoListing,
        paths: tuple[str, ...],
        *,
        max_file_bytes: int,
        user: str | None = None,
    ) -> tuple[FetchedFile, ...]:
        """Read more files of one repository (plain relative paths), as `fetch` reads its
        extra files, in the order given, for `user` as `fetch` does."""

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
