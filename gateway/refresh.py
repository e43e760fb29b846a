"""RefreshBundle's path: coalesce with a running job or record a new one and queue discovery.

Nothing slow happens here: a few KV round trips and one publish, no GitHub call, no blob
read. The user's entry in cm_active names their latest job; it is replaced with
compare-and-set, so two concurrent refreshes of one user agree on one job.

A refresh coalesces onto the user's latest job only while that job is still refreshing
(QUEUED, DISCOVERING, SYNCING, MERGING) and `force` is not set. A job whose bundle is ready
and that is only training never absorbs a refresh: a push made meanwhile gets its own job.
"""

from __future__ import annotations

import asyncio
import logging

from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from gateway.forget_fence import ForgetFence
from gateway.history import JobHistory
from meshkit import metrics
from meshkit.domain.ids import discover_msg_id, new_job_id
from meshkit.erasure import purge, read_now
from meshkit.errors import ConflictError, JobNotFoundError
from meshkit.jobs import JobStore, is_final, is_refreshing
from meshkit.publish import publish_task
from meshkit.topology import DISCOVER, Buckets

__all__ = ["Refresher", "new_record"]

log = logging.getLogger(__name__)


class Refresher:
    """Starts refresh jobs, one running job per user unless forced."""

    def __init__(
        self, js: JetStreamContext, jobs: JobStore, active: KeyValue, history: JobHistory
    ) -> None:
        self.js = js
        self.jobs = jobs
        self.active = active
        self.history = history
        self.fence = ForgetFence(js)

    @classmethod
    async def open(cls, js: JetStreamContext, jobs: JobStore) -> Refresher:
        active = await js.key_value(Buckets.ACTIVE.name)
        history = JobHistory(js, await js.key_value(Buckets.HISTORY.name), jobs)
        return cls(js, jobs, active, history)

    async def refresh(self, user: str, *, force: bool) -> tuple[job_pb2.Job, bool]:
        """Return (job, coalesced)."""
        for _ in range(20):
            entry = await self._active(user)
            if entry is not None and entry.value and not force:
                running = await self._refreshing(entry.value.decode())
                if running is not None:
                    metrics.JOBS_COALESCED.inc()
                    return running, True
            record = new_record(new_job_id(), user, force=force)
            if await self._claim_and_create(user, entry, record):
                return await self._begin(record), False
        raise ConflictError(f"too many concurrent refreshes of {user!r}; try again")

    async def start_unless_refreshing(self, record: job_record_pb2.JobRecord) -> job_pb2.Job | None:
        """Start the record's job unless a job of its user is still refreshing; None then.

        For a job that names repositories to resync (a push webhook's): the running job may
        have listed them already, so coalescing would lose them; the caller tries later.
        """
        user = record.job.user
        for _ in range(20):
            entry = await self._active(user)
            running = entry.value.decode() if entry is not None and entry.value else None
            if running is not None and await self._refreshing(running) is not None:
                return None
            if await self._claim_and_create(user, entry, record):
                return await self._begin(record)
        raise ConflictError(f"too many concurrent refreshes of {user!r}; try again")

    async def running(self, user: str) -> job_pb2.Job | None:
        """The user's latest job while it has not ended (training included), else None."""
        entry = await self._active(user)
        if entry is None or not entry.value:
            return None
        try:
            record, _ = await self.jobs.get(entry.value.decode())
        except JobNotFoundError:
            return None
        return None if is_final(record.job.state) else record.job

    async def start(self, record: job_record_pb2.JobRecord) -> job_pb2.Job:
        """Start the job of `record` whatever is running for its user (a redrive): it becomes
        the user's latest job, onto which later refreshes coalesce."""
        user = record.job.user
        for _ in range(20):
            if await self._claim_and_create(user, await self._active(user), record):
                return await self._begin(record)
        raise ConflictError(f"too many concurrent refreshes of {user!r}; try again")

    async def _active(self, user: str) -> KeyValue.Entry | None:
        try:
            return await self.active.get(user)
        except KeyNotFoundError:
            return None

    async def _claim_and_create(
        self, user: str, entry: KeyValue.Entry | None, record: job_record_pb2.JobRecord
    ) -> bool:
        """Point cm_active at the record's job and store the record; False if another refresh
        of this user moved cm_active first (look again)."""
        job_id = record.job.id
        # The pointer and the record are written at once (one round trip, not two); a
        # record whose pointer write lost the race is deleted, never published.
        claim, created = await asyncio.gather(
            self._claim(user, job_id, entry), self.record(record), return_exceptions=True
        )
        if isinstance(created, BaseException):
            raise created
        if isinstance(claim, BaseException):
            await asyncio.gather(self.jobs.kv.delete(job_id), self.history.remove(record.job))
            if isinstance(claim, KeyWrongLastSequenceError):
                return False
            raise claim
        metrics.JOBS_STARTED.inc()
        return True

    async def _begin(self, record: job_record_pb2.JobRecord) -> job_pb2.Job:
        """Queue a claimed job's discovery, unless its user is being forgotten: then the job
        is taken back (its discovery, if queued, finds no job and is dropped)."""
        job = record.job
        results = await asyncio.gather(
            self.fence.check(job.user, lambda: self._take_back(job)),
            self.queue(record),
            return_exceptions=True,
        )
        for result in results:  # the fence's refusal first: the job is gone either way
            if isinstance(result, BaseException):
                raise result
        return job

    async def _take_back(self, job: job_pb2.Job) -> None:
        await purge(self.js, Buckets.JOBS, job.id)
        await purge(self.js, Buckets.HISTORY, f"{job.user}.{job.id}")
        found = await read_now(self.js, Buckets.ACTIVE, job.user)
        if found is not None and found[0].decode() == job.id:
            await purge(self.js, Buckets.ACTIVE, job.user)

    async def record(self, record: job_record_pb2.JobRecord) -> None:
        """Store a new job's record and list it in its user's history."""
        await asyncio.gather(self.jobs.create(record), self.history.add(record.job))

    async def _refreshing(self, job_id: str) -> job_pb2.Job | None:
        """The job if it is still refreshing (coalescing onto it is right), else None."""
        for attempt in range(2):
            try:
                record, _ = await self.jobs.get(job_id)
            except JobNotFoundError:
                # Its creator writes pointer and record at once: give the record a moment
                # before calling the pointer stale (expired, or its creator died).
                if attempt == 0:
                    await asyncio.sleep(0.05)
                continue
            return record.job if is_refreshing(record.job.state) else None
        return None

    async def _claim(self, user: str, job_id: str, entry: KeyValue.Entry | None) -> None:
        if entry is None:
            await self.active.create(user, job_id.encode())
        else:
            await self.active.update(user, job_id.encode(), last=entry.revision)

    async def queue(self, record: job_record_pb2.JobRecord) -> job_pb2.Job:
        """Publish the discover task of a recorded job; again is harmless (its message id)."""
        job, job_id, user, force = record.job, record.job.id, record.job.user, record.job.force
        resync = list(job.resync)  # named by the job (a push), or by a redriven sync task
        if job.redrive.repository and job.redrive.repository not in resync:
            resync.append(job.redrive.repository)
        task = sync_tasks.DiscoverTask(
            meta=task_pb2.TaskMeta(
                job_id=job_id, task_id=discover_msg_id(job_id), enqueue_time=job.create_time
            ),
            user=user,
            force=force,
            resync=resync,
        )
        try:
            await publish_task(self.js, DISCOVER.subject, task, msg_id=task.meta.task_id)
        except Exception as exc:
            log.error("could not queue discovery of job %s: %s", job_id, exc)
            await self.jobs.end(
                job_id,
                job_pb2.JOB_STATE_FAILED,
                "the job could not be queued; retry the refresh",
                code=job_pb2.ERROR_CODE_QUEUE_UNAVAILABLE,
            )
            raise ConnectionError("the work queue is unavailable; retry the refresh") from exc
        log.info("job %s queued", job_id, extra={"job_id": job_id, "user": user})
        return job


def new_record(job_id: str, user: str, *, force: bool = False) -> job_record_pb2.JobRecord:
    """A QUEUED job's record."""
    record = job_record_pb2.JobRecord()
    job = record.job
    job.id, job.user, job.force = job_id, user, force
    job.state = job_pb2.JOB_STATE_QUEUED
    job.create_time.GetCurrentTime()
    job.update_time.CopyFrom(job.create_time)
    return record
