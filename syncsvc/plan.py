"""Discovery: list a user's repositories, keep the unchanged ones, fan out the stale ones.

A user the source does not know ends the job FAILED at once, without a dead letter: a
misspelt name is the caller's mistake, not work an operator should redrive.

The plan (every repository with its index, fingerprint and whether it is stale) is stored
create-only under jobs/<job>/plan.json before the job's total is set. A redelivered discover
task reads that plan back instead of listing again, so indexes and the total never change
within a job, and re-publishing its sync tasks is harmless (same Nats-Msg-Id; the sync
handler also skips a repository whose outcome is already stored).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.domain.bundle import canonical_json
from meshkit.domain.ids import sync_msg_id
from meshkit.domain.pointers import read_bundle_pointer
from meshkit.errors import BlobExistsError, BlobNotFoundError
from meshkit.jobs import JobStore, is_final
from meshkit.publish import publish_task
from meshkit.topology import SYNC
from meshkit.worker import Delivery, PermanentError
from syncsvc.fanin import FanIn
from syncsvc.sources.base import RepoListing, Source, SourceError, UserNotFoundError

__all__ = ["MAX_REPOSITORIES", "Discovery", "plan_key"]

log = logging.getLogger(__name__)

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus
MAX_REPOSITORIES = 10_000


def plan_key(job_id: str) -> str:
    return f"jobs/{job_id}/plan.json"


@dataclass(frozen=True)
class _Base:
    fingerprint: str
    result_key: str
    status: int


class Discovery:
    def __init__(
        self,
        js: JetStreamContext,
        jobs: JobStore,
        fanin: FanIn,
        pointers: KeyValue,
        blobs: BlobStore,
        source: Source,
    ) -> None:
        self.js = js
        self.jobs = jobs
        self.fanin = fanin
        self.pointers = pointers
        self.blobs = blobs
        self.source = source

    async def handle(self, task: sync_tasks.DiscoverTask, delivery: Delivery) -> None:
        job_id = task.meta.job_id
        record, _ = await self.jobs.get(job_id)
        if is_final(record.job.state):
            return  # cancelled (or failed) before discovery: drop the task
        await self.jobs.update(job_id, _mark_discovering)
        try:
            plan, base_hash = await self._plan(task, delivery)
        except UserNotFoundError as exc:
            # The caller's mistake, not an operator's problem: the job ends FAILED saying so
            # and nothing is parked. Its record (which expires) is the only trace; a
            # redelivery finds the job final and drops the task.
            await self.jobs.end(
                job_id,
                JobState.JOB_STATE_FAILED,
                f"{exc} at the source; check the name",
                code=job_pb2.ERROR_CODE_USER_NOT_FOUND,
            )
            log.info("job %s: %s", job_id, exc, extra={"job_id": job_id})
            return
        total = len(plan)

        def start_syncing(rec: job_record_pb2.JobRecord) -> bool:
            if rec.job.state != JobState.JOB_STATE_DISCOVERING:
                return False
            rec.job.state = JobState.JOB_STATE_SYNCING
            rec.job.total = total
            rec.counted = bytes((total + 7) // 8)
            rec.base_bundle_hash = base_hash
            return True

        record = await self.jobs.update(job_id, start_syncing)
        if is_final(record.job.state):
            return
        unchanged = [
            sync_tasks.RepoOutcome(
                repository=p["repository"],
                index=i,
                status=RepoStatus.REPO_STATUS_UNCHANGED,
                fingerprint=p["fingerprint"],
                result_key=p["previous_result_key"],
            )
            for i, p in enumerate(plan)
            if not p["stale"]
        ]
        stale = [(i, p) for i, p in enumerate(plan) if p["stale"]]
        for start in range(0, len(stale), 128):
            await asyncio.gather(
                *(self._publish_sync(task, i, p) for i, p in stale[start : start + 128])
            )
        # Also starts the merge when nothing is stale (or the user has no repositories).
        await self.fanin.record(job_id, task.user, unchanged)
        log.info(
            "job %s: %d repositories, %d stale",
            job_id,
            total,
            len(stale),
            extra={"job_id": job_id},
        )

    async def _plan(
        self, task: sync_tasks.DiscoverTask, delivery: Delivery
    ) -> tuple[list[dict], str]:
        key = plan_key(task.meta.job_id)
        try:
            stored = json.loads(await self.blobs.get(key))
            return stored["repositories"], stored["base_bundle_hash"]
        except BlobNotFoundError:
            pass
        try:
            listing = await self.source.list_repositories(task.user)
        except UserNotFoundError:
            raise  # handle() ends the job without parking the task
        except SourceError as exc:
            if not exc.transient:
                raise PermanentError(
                    f"cannot list repositories of {task.user!r}: {exc}",
                    code=job_pb2.ERROR_CODE_SOURCE_REFUSED,
                ) from None
            raise
        if len(listing) > MAX_REPOSITORIES:
            raise PermanentError(
                f"{task.user!r} has {len(listing)} repositories; the limit is {MAX_REPOSITORIES}",
                code=job_pb2.ERROR_CODE_SOURCE_REFUSED,
            )
        base, base_hash = await self._base(task.user)
        resync = {name.lower() for name in task.resync}
        plan = [
            _plan_entry(
                repo,
                base.get(repo.full_name.lower()),
                task.force or repo.full_name.lower() in resync,
            )
            for repo in sorted(listing, key=lambda r: r.full_name.lower())
        ]
        document = {"base_bundle_hash": base_hash, "repositories": plan}
        try:
            await self.blobs.create(key, canonical_json(document))
        except BlobExistsError:  # a concurrent delivery planned first: use its plan
            stored = json.loads(await self.blobs.get(key))
            return stored["repositories"], stored["base_bundle_hash"]
        return plan, base_hash

    async def _base(self, user: str) -> tuple[dict[str, _Base], str]:
        """The fingerprints of the user's current bundle, from its small index blob."""
        pointer = await read_bundle_pointer(self.pointers, user)
        if pointer is None:
            return {}, ""
        index = bundle_pb2.BundleIndex()
        try:
            index.ParseFromString(await self.blobs.get(pointer.index_key))
        except BlobNotFoundError:
            log.warning(
                "bundle index %s is missing; treating every repository as stale", pointer.index_key
            )
            return {}, ""
        return (
            {
                r.repository.lower(): _Base(r.fingerprint, r.result_key, r.status)
                for r in index.repositories
            },
            pointer.bundle.content_hash,
        )

    async def _publish_sync(self, task: sync_tasks.DiscoverTask, index: int, entry: dict) -> None:
        meta = entry["metadata"]
        sync = sync_tasks.SyncRepoTask(
            meta=task_pb2.TaskMeta(
                job_id=task.meta.job_id,
                task_id=sync_msg_id(task.meta.job_id, index),
                attempt=task.meta.attempt,
            ),
            user=task.user,
            repository=entry["repository"],
            index=index,
            fingerprint=entry["fingerprint"],
            default_branch=entry["default_branch"],
            previous_result_key=entry["previous_result_key"],
            metadata=sync_tasks.RepoMetadata(
                description=meta["description"] or "",
                language=meta["language"] or "",
                topics=meta["topics"],
                homepage=meta["homepage"] or "",
                url=meta["url"] or "",
                private=meta["private"],
            ),
        )
        sync.meta.enqueue_time.GetCurrentTime()
        await publish_task(self.js, SYNC.subject, sync, msg_id=sync.meta.task_id)


def _mark_discovering(record: job_record_pb2.JobRecord) -> bool:
    if record.job.state != JobState.JOB_STATE_QUEUED:
        return False
    record.job.state = JobState.JOB_STATE_DISCOVERING
    return True


def _plan_entry(repo: RepoListing, base: _Base | None, force: bool) -> dict:
    """One repository of the plan; `force` makes it stale whatever its fingerprint says."""
    unchanged = (
        not force
        and base is not None
        and base.fingerprint == repo.fingerprint
        and bool(base.result_key)
        and base.status != RepoStatus.REPO_STATUS_FAILED
    )
    return {
        "repository": repo.full_name,
        "fingerprint": repo.fingerprint,
        "default_branch": repo.default_branch,
        "stale": not unchanged,
        "previous_result_key": base.result_key if base else "",
        "metadata": {
            "description": repo.description,
            "language": repo.language,
            "topics": list(repo.topics),
            "homepage": repo.homepage,
            "url": repo.url,
            "private": repo.private,
        },
    }
