"""Fan-in: count each repository of a job exactly once, and start exactly one merge.

1. The outcome is stored with a create-only write under "<job>.<index>" in cm_outcomes: the
   first outcome written for a repository is the one that counts, whatever redeliveries do.
2. Bit <index> of the job record's `counted` bitmap is set, and the counters moved, in one
   compare-and-set of the record, only if the bit was clear. Setting the last bit moves the
   job to MERGING in the same write.
3. Whoever sees the job in MERGING publishes the merge task, with Nats-Msg-Id
   "merge:<job>": a crash between 2 and 3 is healed by the redelivery, which finds the bit
   set and publishes again; JetStream drops the duplicate, and mergesvc is idempotent too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from meshkit.domain.ids import merge_msg_id
from meshkit.jobs import JobStore, is_final
from meshkit.publish import publish_task
from meshkit.topology import MERGE

__all__ = ["FanIn", "bit_is_set", "outcome_key"]

log = logging.getLogger(__name__)

RepoStatus = job_pb2.RepoStatus
MAX_LISTED_FAILURES = 50


def outcome_key(job_id: str, index: int) -> str:
    return f"{job_id}.{index}"


def bit_is_set(bitmap: bytes | bytearray, index: int) -> bool:
    byte = index // 8
    return byte < len(bitmap) and bool(bitmap[byte] & (1 << (index % 8)))


class FanIn:
    def __init__(self, js: JetStreamContext, jobs: JobStore, outcomes: KeyValue) -> None:
        self.js = js
        self.jobs = jobs
        self.outcomes = outcomes

    async def _store(self, job_id: str, outcome: sync_tasks.RepoOutcome) -> sync_tasks.RepoOutcome:
        """Store outcome unless one is stored already; return the one that counts."""
        key = outcome_key(job_id, outcome.index)
        try:
            await self.outcomes.create(key, outcome.SerializeToString(deterministic=True))
            return outcome
        except KeyWrongLastSequenceError:
            entry = await self.outcomes.get(key)
            kept = sync_tasks.RepoOutcome()
            kept.ParseFromString(entry.value or b"")
            return kept

    async def stored(self, job_id: str, index: int) -> sync_tasks.RepoOutcome | None:
        try:
            entry = await self.outcomes.get(outcome_key(job_id, index))
        except KeyNotFoundError:
            return None
        kept = sync_tasks.RepoOutcome()
        kept.ParseFromString(entry.value or b"")
        return kept

    async def record(
        self, job_id: str, user: str, outcomes: Sequence[sync_tasks.RepoOutcome]
    ) -> job_record_pb2.JobRecord:
        """Store and count outcomes; start the merge when they complete the job."""
        kept: list[sync_tasks.RepoOutcome] = []
        for start in range(0, len(outcomes), 64):
            kept += await asyncio.gather(
                *(self._store(job_id, o) for o in outcomes[start : start + 64])
            )

        def count(record: job_record_pb2.JobRecord) -> bool:
            job = record.job
            if is_final(job.state) or job.state != job_pb2.JOB_STATE_SYNCING:
                return False
            bitmap = bytearray(record.counted)
            changed = False
            for outcome in kept:
                if outcome.index >= job.total or bit_is_set(bitmap, outcome.index):
                    continue
                bitmap[outcome.index // 8] |= 1 << (outcome.index % 8)
                changed = True
                if outcome.status == RepoStatus.REPO_STATUS_SYNCED:
                    job.synced += 1
                elif outcome.status == RepoStatus.REPO_STATUS_UNCHANGED:
                    job.unchanged += 1
                else:
                    job.failed += 1
                    if len(job.failures) < MAX_LISTED_FAILURES:
                        job.failures.add(repository=outcome.repository, reason=outcome.reason)
            record.counted = bytes(bitmap)
            if job.synced + job.unchanged + job.failed >= job.total:
                job.state = job_pb2.JOB_STATE_MERGING
                changed = True
            return changed

        record = await self.jobs.apply(job_id, count)
        await self.merge_if_complete(record)
        return record

    async def merge_if_complete(self, record: job_record_pb2.JobRecord) -> None:
        job = record.job
        if job.state != job_pb2.JOB_STATE_MERGING:
            return
        task = merge_tasks.MergeTask(
            meta=task_pb2.TaskMeta(job_id=job.id, task_id=merge_msg_id(job.id)),
            user=job.user,
            total=job.total,
        )
        task.meta.enqueue_time.GetCurrentTime()
        await publish_task(self.js, MERGE.subject, task, msg_id=task.meta.task_id)
