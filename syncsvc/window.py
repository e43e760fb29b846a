"""The sync window: a job has at most `window` sync tasks out (queued or running) at once.

SYNC is one FIFO stream that every job shares. Were a job to publish all its tasks at once, a
2,000-repository refresh would queue 2,000 tasks ahead of a 10-repository one started just
after. Instead discovery publishes the first `window` stale repositories' tasks, and each
task, once its outcome is counted, publishes the task `window` places further on in the
plan's stale order (`Plan.successor`). A big job thus keeps `window` workers busy while a
small job's tasks queue behind at most `window` of its tasks.

Each place of the window is a lane that holds one uncounted task at a time, so no shared
cursor is needed and every step can repeat: the successor's Nats-Msg-Id
("sync:<job>:<index>") makes a second publish inside the duplicate window a no-op, and a
crash between counting and publishing is healed by the redelivery, which finds its outcome
stored, counts nothing new and publishes the successor again. Nothing goes out for a job
that is no longer syncing (cancelled, forgotten, merging), nor for a successor already
counted.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from nats.js import JetStreamContext

from meshkit.blob import BlobStore
from meshkit.publish import publish_task
from meshkit.topology import SYNC
from syncsvc.fanin import bit_is_set
from syncsvc.plan import Plan, read_plan, sync_task

__all__ = ["SyncWindow"]

CACHED_PLANS = 8
"""Plans kept per process: the jobs syncing at once are few, and a plan of 10,000
repositories is a few MB."""
PUBLISH_BATCH = 128


class SyncWindow:
    """Publishes a job's sync tasks as its window allows."""

    def __init__(self, js: JetStreamContext, blobs: BlobStore) -> None:
        self.js = js
        self.blobs = blobs
        self._plans: OrderedDict[str, asyncio.Task[Plan]] = OrderedDict()

    async def open(self, job_id: str, user: str, plan: Plan) -> None:
        """Publish the tasks of the window's first places (discovery, and its redeliveries)."""
        opening = plan.opening()
        for start in range(0, len(opening), PUBLISH_BATCH):
            await asyncio.gather(
                *(
                    self._publish(sync_task(job_id, user, plan, index))
                    for index in opening[start : start + PUBLISH_BATCH]
                )
            )

    async def advance(self, record: job_record_pb2.JobRecord, index: int) -> None:
        """The repository at `index` is counted in `record`: publish its lane's next task."""
        job = record.job
        if job.state != job_pb2.JOB_STATE_SYNCING:
            return  # merging (all counted), or ended: nothing more goes out
        plan = await self._plan(job.id)
        successor = plan.successor(index)
        if successor is None or bit_is_set(record.counted, successor):
            return
        await self._publish(sync_task(job.id, job.user, plan, successor))

    async def _plan(self, job_id: str) -> Plan:
        """The job's plan, read once per process while it stays among the recent ones; the
        tasks of a job that finish together share one read."""
        reading = self._plans.get(job_id)
        if reading is None:
            reading = asyncio.ensure_future(read_plan(self.blobs, job_id))
            self._plans[job_id] = reading
            while len(self._plans) > CACHED_PLANS:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(job_id)
        try:
            return await asyncio.shield(reading)
        except Exception:
            if self._plans.get(job_id) is reading:
                del self._plans[job_id]  # a failed read is tried again by the next task
            raise

    async def _publish(self, task: sync_tasks.SyncRepoTask) -> None:
        await publish_task(self.js, SYNC.subject, task, msg_id=task.meta.task_id)
