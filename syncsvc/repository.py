"""One repository's sync: fetch its files, build its result, store it, say how it went.

The result is stored content-addressed (create-only; the same content is the same key), so
a redelivered task re-creates nothing. A repository whose fetch still fails after the
source's own retries (5xx, timeouts) or fails for good (permission) has a FAILED outcome with
the reason and keeps its previous result, if it had one, for the merge to carry over: the
job goes on without waiting for it. Only a rate limit whose reset is far off hands the task
back to the queue until then. Anything else (NATS, blob store) is redelivered by JetStream.
"""

from __future__ import annotations

import dataclasses
import logging

from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks

from meshkit.blob import BlobStore
from meshkit.blob.base import ensure_stored
from meshkit.config import SyncSettings
from meshkit.domain.bundle import content_hash, repo_result_key
from meshkit.domain.documents import RepositoryMetadata
from meshkit.domain.passages import MANIFESTS, is_thin
from meshkit.worker import Delivery, RetryLater
from syncsvc.repo_result import ensure_encodable, normalize_repository
from syncsvc.sources.base import FetchedRepo, RepoListing, Source, SourceError

__all__ = ["failed_outcome", "sync_repository", "with_manifests"]

log = logging.getLogger(__name__)

RepoStatus = job_pb2.RepoStatus


def failed_outcome(task: sync_tasks.SyncRepoTask, reason: str) -> sync_tasks.RepoOutcome:
    """The repository failed: it keeps its previous result, if any, and says why."""
    return sync_tasks.RepoOutcome(
        repository=task.repository,
        index=task.index,
        status=RepoStatus.REPO_STATUS_FAILED,
        fingerprint=task.fingerprint,
        result_key=task.previous_result_key,
        reason=reason[:500],
    )


def listing_of(task: sync_tasks.SyncRepoTask) -> RepoListing:
    """The source's listing of the repository, as discovery carried it in the task."""
    meta = task.metadata
    return RepoListing(
        full_name=task.repository,
        fingerprint=task.fingerprint,
        default_branch=task.default_branch or "main",
        metadata=RepositoryMetadata(
            description=meta.description or None,
            language=meta.language or None,
            topics=tuple(meta.topics),
            homepage=meta.homepage or None,
            url=meta.url or None,
            private=meta.private,
        ),
    )


async def sync_repository(
    task: sync_tasks.SyncRepoTask,
    delivery: Delivery,
    *,
    source: Source,
    blobs: BlobStore,
    settings: SyncSettings,
    stored: dict[str, bytes] | None = None,
) -> sync_tasks.RepoOutcome:
    """Fetch and store the task's repository; its outcome, SYNCED or FAILED. RetryLater when
    the source is rate limited and this is not the last delivery. The result's key and bytes
    go into `stored`, for storing again if a retention sweep deletes it meanwhile."""
    listing = listing_of(task)
    try:
        fetched = await source.fetch(
            listing,
            extra_files=settings.extra_files,
            max_file_bytes=settings.max_file_bytes,
            user=task.user,
        )
        fetched = await with_manifests(
            source, listing, fetched, settings.max_file_bytes, user=task.user
        )
    except SourceError as exc:
        if exc.retry_after_s is not None and not delivery.is_last:
            raise RetryLater(exc.retry_after_s, str(exc)) from None
        log.warning(
            "repository %s failed: %s", task.repository, exc, extra={"job_id": task.meta.job_id}
        )
        return failed_outcome(task, str(exc))
    result = normalize_repository(listing, fetched, max_file_bytes=settings.max_file_bytes)
    data = ensure_encodable(result)
    key = repo_result_key(task.repository, content_hash(data))
    await ensure_stored(blobs, key, data)
    if stored is not None:
        stored[key] = data
    return sync_tasks.RepoOutcome(
        repository=task.repository,
        index=task.index,
        status=RepoStatus.REPO_STATUS_SYNCED,
        fingerprint=task.fingerprint,
        result_key=key,
        warnings=result.warnings,
    )


async def with_manifests(
    source: Source,
    listing: RepoListing,
    fetched: FetchedRepo,
    max_file_bytes: int,
    *,
    user: str | None = None,
) -> FetchedRepo:
    """A thin repository's files with its package manifests added (those not fetched already):
    their description and keywords are most of what such a repository says about itself. A
    repository with context costs no extra request."""
    readme = fetched.readme.data.decode("utf-8", "replace") if fetched.readme.data else ""
    if not is_thin(has_context=fetched.context.status != "missing", readme=readme):
        return fetched
    have = {file.path for file in fetched.extra}
    wanted = tuple(path for path in MANIFESTS if path not in have)
    if not wanted:
        return fetched
    more = await source.fetch_files(listing, wanted, max_file_bytes=max_file_bytes, user=user)
    return dataclasses.replace(fetched, extra=fetched.extra + more)
