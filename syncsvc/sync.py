"""Per-repository sync: fetch the files, build the repository result, store it, count it.

The result is stored content-addressed (create-only; the same content is the same key), so
a redelivered task re-creates nothing. A repository whose fetch still fails after the
source's own retries (5xx, timeouts) or fails for good (permission) is counted FAILED with
the reason and keeps its previous result, if it had one, for the merge to carry over: the
job goes on without waiting for it. Only a rate limit whose reset is far off hands the task
back to the queue until then. Anything else (NATS, blob store) is redelivered by JetStream.
"""

from __future__ import annotations

import logging

from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks

from meshkit.blob import BlobStore
from meshkit.blob.base import ensure_stored
from meshkit.config import SyncSettings
from meshkit.domain.bundle import content_hash, repo_result_key
from meshkit.jobs import JobStore, is_final
from meshkit.worker import Delivery, RetryLater
from syncsvc.fanin import FanIn
from syncsvc.repo_result import ensure_encodable, normalize_repository
from syncsvc.sources.base import RepoListing, Source, SourceError

__all__ = ["RepoSync", "failed_outcome"]

log = logging.getLogger(__name__)

RepoStatus = job_pb2.RepoStatus


def failed_outcome(task: sync_tasks.SyncRepoTask, reason: str) -> sync_tasks.RepoOutcome:
    return sync_tasks.RepoOutcome(
        repository=task.repository,
        index=task.index,
        status=RepoStatus.REPO_STATUS_FAILED,
        fingerprint=task.fingerprint,
        result_key=task.previous_result_key,
        reason=reason[:500],
    )


def listing_of(task: sync_tasks.SyncRepoTask) -> RepoListing:
    meta = task.metadata
    return RepoListing(
        full_name=task.repository,
        fingerprint=task.fingerprint,
        default_branch=task.default_branch or "main",
        description=meta.description or None,
        language=meta.language or None,
        topics=tuple(meta.topics),
        homepage=meta.homepage or None,
        url=meta.url or None,
        private=meta.private,
    )


class RepoSync:
    def __init__(
        self,
        jobs: JobStore,
        fanin: FanIn,
        blobs: BlobStore,
        source: Source,
        settings: SyncSettings,
    ) -> None:
        self.jobs = jobs
        self.fanin = fanin
        self.blobs = blobs
        self.source = source
        self.settings = settings

    async def handle(self, task: sync_tasks.SyncRepoTask, delivery: Delivery) -> None:
        job_id = task.meta.job_id
        record, _ = await self.jobs.get(job_id)
        if is_final(record.job.state):
            return  # cancelled: work picked up after the cancel is dropped
        if (done := await self.fanin.stored(job_id, task.index)) is not None:
            await self.fanin.record(job_id, task.user, [done])  # count it if a crash didn't
            return
        outcome = await self._sync(task, delivery)
        await self.fanin.record(job_id, task.user, [outcome])

    async def _sync(
        self, task: sync_tasks.SyncRepoTask, delivery: Delivery
    ) -> sync_tasks.RepoOutcome:
        listing = listing_of(task)
        try:
            fetched = await self.source.fetch(
                listing,
                extra_files=self.settings.extra_files,
                max_file_bytes=self.settings.max_file_bytes,
            )
        except SourceError as exc:
            if exc.retry_after_s is not None and not delivery.is_last:
                raise RetryLater(exc.retry_after_s, str(exc)) from None
            log.warning(
                "repository %s failed: %s", task.repository, exc, extra={"job_id": task.meta.job_id}
            )
            return failed_outcome(task, str(exc))
        result = normalize_repository(listing, fetched, max_file_bytes=self.settings.max_file_bytes)
        data = ensure_encodable(result)
        key = repo_result_key(task.repository, content_hash(data))
        await ensure_stored(self.blobs, key, data)
        return sync_tasks.RepoOutcome(
            repository=task.repository,
            index=task.index,
            status=RepoStatus.REPO_STATUS_SYNCED,
            fingerprint=task.fingerprint,
            result_key=key,
            warnings=result.warnings,
        )
