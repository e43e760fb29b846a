"""The two syncsvc handlers: DiscoverTask (plan the job, open its sync window) and
SyncRepoTask (sync one repository, count it, publish the next task of its window's lane).

A user the source does not know ends the job FAILED at once, without a dead letter: a
misspelt name is the caller's mistake, not work an operator should redrive. A repository
that can never sync is that repository's failure, counted FAILED; the job goes on.
"""

from __future__ import annotations

import logging

from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from nats.js import JetStreamContext

from meshkit.blob import BlobStore
from meshkit.blob.base import ensure_stored
from meshkit.config import SyncSettings
from meshkit.domain.retention_fence import RetentionFence
from meshkit.domain.user_data import erase_job, erase_owner
from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore, is_final
from meshkit.worker import Delivery, Failure
from syncsvc.fanin import FanIn
from syncsvc.plan import Plan, Planner, carried_results
from syncsvc.repository import failed_outcome, sync_repository
from syncsvc.sources.base import Source, UserNotFoundError
from syncsvc.window import SyncWindow

__all__ = ["DiscoverHandler", "SyncHandler"]

log = logging.getLogger(__name__)

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus


class DiscoverHandler:
    """Handles DiscoverTasks: list and plan, then the sync tasks of the job's window."""

    task_type = sync_tasks.DiscoverTask

    def __init__(
        self, js: JetStreamContext, jobs: JobStore, fanin: FanIn, planner: Planner
    ) -> None:
        self.js = js
        self.jobs = jobs
        self.fanin = fanin
        self.planner = planner
        self.window = SyncWindow(js, planner.blobs)
        self.fence = RetentionFence(js)

    async def handle(self, task: sync_tasks.DiscoverTask, delivery: Delivery) -> None:
        job_id = task.meta.job_id
        record, _ = await self.jobs.get(job_id)
        if is_final(record.job.state):
            return  # cancelled (or failed) before discovery: drop the task
        try:
            await self._discover(task)
            await self.jobs.require(job_id)
        except JobNotFoundError:
            # Forgotten (DeleteUser) while this ran: take back what it wrote; then the worker
            # drops the task (docs/architecture.md, "Forgetting a user").
            await erase_job(self.js, self.planner.blobs, job_id)
            await erase_owner(self.js, self.planner.blobs, task.user)
            raise

    async def _discover(self, task: sync_tasks.DiscoverTask) -> None:
        job_id = task.meta.job_id
        record = await self.jobs.update(job_id, _mark_discovering)
        try:
            plan = await self._plan(
                task, replannable=record.job.state == JobState.JOB_STATE_DISCOVERING
            )
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
        total = len(plan.repositories)

        def start_syncing(rec: job_record_pb2.JobRecord) -> bool:
            if rec.job.state != JobState.JOB_STATE_DISCOVERING:
                return False
            rec.job.state = JobState.JOB_STATE_SYNCING
            rec.job.total = total
            rec.counted = bytes((total + 7) // 8)
            rec.base_bundle_hash = plan.base_bundle_hash
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
            for i, p in enumerate(plan.repositories)
            if not p["stale"]
        ]
        await self.window.open(job_id, task.user, plan)
        # Also starts the merge when nothing is stale (or the user has no repositories).
        await self.fanin.record(job_id, task.user, unchanged)
        log.info(
            "job %s: %d repositories, %d stale, %d out at once",
            job_id,
            total,
            len(plan.stale),
            plan.window,
            extra={"job_id": job_id},
        )

    async def _plan(self, task: sync_tasks.DiscoverTask, *, replannable: bool) -> Plan:
        """The job's plan, its carried-over results kept from a retention sweep: the stored
        plan references them, then the fence keeps them (meshkit.domain.retention_fence). A
        result the sweep deleted first makes its repository stale in a new plan, while the
        total is not set (so nothing has read the old one). A redelivery after the total was
        set cannot meet that: its first delivery kept the results before setting it, and a
        later sweep reads the running job's plan."""
        plan = await self.planner.plan(task)
        lost: set[str] = set()
        while found := await self.fence.keep(carried_results(plan)):
            if not replannable:
                log.error(
                    "job %s: carried results %s were swept after its total was set",
                    task.meta.job_id,
                    found,
                    extra={"job_id": task.meta.job_id},
                )
                break
            lost.update(found)
            log.info(
                "job %s: %d carried results were swept; planning again",
                task.meta.job_id,
                len(found),
                extra={"job_id": task.meta.job_id},
            )
            plan = await self.planner.plan(task, replace=True, lost=frozenset(lost))
        return plan

    async def on_dead_letter(self, task: sync_tasks.DiscoverTask | None, failure: Failure) -> None:
        """The repositories could not be listed: the job ends FAILED."""
        if task is None:
            return
        if failure.public is not None:
            code = failure.code or job_pb2.ERROR_CODE_SOURCE_REFUSED
            message = f"discovery failed: {failure.public}"
        else:
            code = job_pb2.ERROR_CODE_DISCOVERY_FAILED
            message = (
                "listing the repositories failed on every attempt; "
                "the task is parked for an operator to redrive"
            )
        await self.jobs.end(
            task.meta.job_id, job_pb2.JOB_STATE_FAILED, message, code=code, missing_ok=True
        )


class SyncHandler:
    """Handles SyncRepoTasks: each repository's outcome stored and counted exactly once, then
    the next task of its lane published (syncsvc/window.py)."""

    task_type = sync_tasks.SyncRepoTask

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
        self.window = SyncWindow(fanin.js, blobs)
        self.fence = RetentionFence(fanin.js)

    async def handle(self, task: sync_tasks.SyncRepoTask, delivery: Delivery) -> None:
        job_id = task.meta.job_id
        record, _ = await self.jobs.get(job_id)
        if is_final(record.job.state):
            return  # cancelled: work picked up after the cancel is dropped
        try:
            await self._sync(task, delivery)
            await self.jobs.require(job_id)
        except JobNotFoundError:
            # Forgotten (DeleteUser) while this ran: take back what it wrote; then the worker
            # drops the task (docs/architecture.md, "Forgetting a user").
            await erase_job(self.fanin.js, self.blobs, job_id)
            await erase_owner(self.fanin.js, self.blobs, task.repository.split("/")[0])
            raise

    async def _sync(self, task: sync_tasks.SyncRepoTask, delivery: Delivery) -> None:
        job_id = task.meta.job_id
        outcome = await self.fanin.stored(job_id, task.index)  # a crash may have left it
        stored: dict[str, bytes] = {}
        if outcome is None:
            outcome = await sync_repository(
                task,
                delivery,
                source=self.source,
                blobs=self.blobs,
                settings=self.settings,
                stored=stored,
            )
        record = await self.fanin.record(job_id, task.user, [outcome])
        # The outcome references the result, which may be an old object a retention sweep
        # condemned (same content): keep it, or store it again from the bytes synced here (a
        # redelivery that found the outcome stored has none).
        lost = await self.fence.keep(
            [outcome.result_key],
            (lambda key: ensure_stored(self.blobs, key, stored[key])) if stored else None,
        )
        if lost:
            log.warning("job %s: result %s was swept", job_id, lost[0], extra={"job_id": job_id})
        await self.window.advance(record, task.index)

    async def on_dead_letter(self, task: sync_tasks.SyncRepoTask | None, failure: Failure) -> None:
        """A repository that can never sync is one repository's failure, not the job's: it
        is counted FAILED and the job goes on."""
        if task is None:
            return
        reason = failure.public or (
            "the repository could not be synced on any attempt; "
            "the task is parked for an operator to redrive"
        )
        record = await self.fanin.record(
            task.meta.job_id, task.user, [failed_outcome(task, reason)]
        )
        await self.window.advance(record, task.index)


def _mark_discovering(record: job_record_pb2.JobRecord) -> bool:
    if record.job.state != JobState.JOB_STATE_QUEUED:
        return False
    record.job.state = JobState.JOB_STATE_DISCOVERING
    return True
