"""The sweeper: end jobs that can no longer finish.

A job moves only when its tasks run. If they are lost (a stream purged, a task past its
stream's age limit, a bug), the job would stay non-final forever: its watchers would never
get a final message and every refresh of its user would coalesce onto it. Each gateway
reads cm_jobs every CONTEXTMESH_SWEEP_INTERVAL_S and ends what has stalled:

    refreshing, record unchanged for CONTEXTMESH_JOB_STALL_S        -> FAILED, saying so
    bundle ready, record unchanged for CONTEXTMESH_TRAINING_STALL_S -> DONE, training FAILED

A stalled job's record is not changing, so its update time says how long it has stalled.
Ending is a compare-and-set from the state that was seen, checked again on the latest
record, so two gateways sweeping at once, or a task that wakes up late, end a job once.

The same pass counts the jobs not yet final and the age of the oldest for Prometheus
(contextmesh_jobs_running, contextmesh_job_oldest_running_age_seconds): as fresh as the
last sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from contextmesh.job.v1 import job_pb2, job_record_pb2

from meshkit import metrics
from meshkit.config import JobSettings
from meshkit.errors import JobNotFoundError
from meshkit.job_errors import end_with_error
from meshkit.jobs import (
    TRAINING_STATES,
    WATCH_INACTIVE_S,
    JobStore,
    Mutation,
    is_final,
    is_refreshing,
    stop_watcher,
)

__all__ = ["JobSweeper"]

log = logging.getLogger(__name__)

JobState = job_pb2.JobState
TrainingState = job_pb2.TrainingState


class JobSweeper:
    """Ends stalled jobs (see the module docstring)."""

    def __init__(self, jobs: JobStore, settings: JobSettings) -> None:
        self.jobs = jobs
        self.settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every interval (with jitter, so gateways spread out) until stop is set. The
        first sweep waits an interval too: starting a gateway reads no job it does not need."""
        while True:
            interval = self.settings.sweep_interval_s * random.uniform(0.8, 1.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                await self.sweep()
            except Exception as exc:  # the next sweep tries again
                log.warning("job sweep failed: %s", exc)

    async def sweep(self, now: float | None = None) -> list[str]:
        """One pass over cm_jobs; returns the ids of the jobs it ended."""
        now = time.time() if now is None else now
        ended = []
        for job_id in await self._stalled(now):
            reasons: list[str] = []
            try:
                record = await self.jobs.update(job_id, self._end_if_stalled(now, reasons))
            except JobNotFoundError:
                continue  # expired meanwhile
            if reasons:
                ended.append(job_id)
                log.warning(
                    "job %s ended by the sweeper (%s): %s",
                    job_id,
                    JobState.Name(record.job.state),
                    reasons[-1],
                    extra={"job_id": job_id},
                )
        return ended

    async def _stalled(self, now: float) -> list[str]:
        """Ids of the jobs that look stalled, read from one pass of a watch over the bucket;
        the pass also sets the gauges of running jobs (meshkit.metrics)."""
        watcher = await self.jobs.kv.watchall(
            ignore_deletes=True, inactive_threshold=WATCH_INACTIVE_S
        )
        stalled = []
        running = 0
        oldest = now
        try:
            while (entry := await watcher.updates(timeout=30)) is not None:
                if not entry.value:
                    continue
                record = job_record_pb2.JobRecord()
                record.ParseFromString(entry.value)
                if not is_final(record.job.state):
                    running += 1
                    oldest = min(oldest, record.job.create_time.ToNanoseconds() / 1e9)
                if self._stall_reason(record.job, now):
                    stalled.append(record.job.id)
        finally:
            await stop_watcher(watcher)
        metrics.JOBS_RUNNING.set(running)
        metrics.JOB_OLDEST_RUNNING_AGE.set(now - oldest)
        return stalled

    def _stall_reason(self, job: job_pb2.Job, now: float) -> str | None:
        idle = now - (job.update_time.seconds + job.update_time.nanos / 1e9)
        if is_refreshing(job.state) and idle > self.settings.stall_s:
            return (
                f"the job made no progress for {idle:.0f} s (its tasks were lost or expired); "
                "refresh again"
            )
        if job.state in TRAINING_STATES and idle > self.settings.training_stall_s:
            return (
                f"training made no progress for {idle:.0f} s (its task was lost or expired); "
                "the bundle is ready and the previous model keeps serving"
            )
        return None

    def _end_if_stalled(self, now: float, reasons: list[str]) -> Mutation:
        """Ends the job if it is still stalled; appends the reason to `reasons` when it does."""

        def mutate(record: job_record_pb2.JobRecord) -> bool:
            job = record.job
            reason = self._stall_reason(job, now)
            if reason is None:
                return False  # it moved since the pass saw it
            reasons.append(reason)
            if is_refreshing(job.state):
                end_with_error(
                    job, JobState.JOB_STATE_FAILED, reason, code=job_pb2.ERROR_CODE_STALLED
                )
            else:
                job.state = JobState.JOB_STATE_DONE
                job.training.state = TrainingState.TRAINING_STATE_FAILED
                job.training.reason = reason
            return True

        return mutate
