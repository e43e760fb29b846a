"""The MergeTask handler: build a job's bundle exactly once, then ask for its training.

Idempotent from every angle a redelivery can reach it: the bundle, its index, the pointer
and the job's move to BUNDLE_READY are each safe to repeat (mergesvc.merge); the train task
carries Nats-Msg-Id "train:<job>", and a redelivery that finds the job already past MERGING
only re-publishes it (a crash may have come between the two).

Training is a follow-up, never a gate: the job goes straight to DONE, and no train task is
published (trainsvc's GPU pool stays asleep), when training is off or when the model that
serves the user was tuned on this very bundle already, as after a refresh that changed
nothing. A new training configuration therefore applies at a user's next changed bundle,
as trainsvc's own skip rule always did.
"""

from __future__ import annotations

import logging

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.task.v1 import task_pb2
from contextmesh.train.v1 import tasks_pb2 as train_tasks
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mergesvc.merge import (
    build_bundle,
    bundle_index,
    mark_ready,
    move_bundle_pointer,
    read_outcomes,
    read_results,
    take_back_bundle,
)
from meshkit.blob import BlobStore
from meshkit.blob.base import ensure_stored
from meshkit.domain.bundle import bundle_index_key, bundle_key, canonical_json, content_hash
from meshkit.domain.ids import train_msg_id
from meshkit.domain.pointers import read_model_pointer
from meshkit.domain.retention_fence import RetentionFence
from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore, is_final
from meshkit.publish import publish_task
from meshkit.topology import TRAIN
from meshkit.worker import Delivery, Failure, RetryLater

__all__ = ["MergeHandler"]

log = logging.getLogger(__name__)

JobState = job_pb2.JobState


class MergeHandler:
    """Handles MergeTasks: one bundle per job, the user's pointer moved to it."""

    task_type = merge_tasks.MergeTask

    def __init__(
        self,
        js: JetStreamContext,
        jobs: JobStore,
        outcomes: KeyValue,
        pointers: KeyValue,
        models: KeyValue,
        blobs: BlobStore,
        *,
        training: bool,
    ) -> None:
        self.js = js
        self.jobs = jobs
        self.outcomes = outcomes
        self.pointers = pointers
        self.models = models
        self.blobs = blobs
        self.training = training
        self.fence = RetentionFence(js)

    async def handle(self, task: merge_tasks.MergeTask, delivery: Delivery) -> None:
        job_id = task.meta.job_id
        record, _ = await self.jobs.get(job_id)
        state = record.job.state
        if is_final(state):
            return
        if state in (JobState.JOB_STATE_BUNDLE_READY, JobState.JOB_STATE_TRAINING):
            await self._ask_for_training(record)  # merged already; a crash may have hit here
            return
        if state != JobState.JOB_STATE_MERGING:
            raise RetryLater(1.0, f"job {job_id} is {JobState.Name(state)}, not MERGING yet")
        user = record.job.user
        outcomes = await read_outcomes(self.outcomes, job_id, record.job.total)
        document = build_bundle(user, outcomes, await read_results(self.blobs, outcomes))
        data = canonical_json(document.to_json())
        digest = content_hash(data)
        ref = job_pb2.BundleRef(
            content_hash=digest,
            blob_key=bundle_key(user, digest),
            repositories=len(outcomes),
            size_bytes=len(data),
        )
        index = bundle_index(user, digest, outcomes)
        index_key = bundle_index_key(user, digest, job_id)
        try:
            await ensure_stored(self.blobs, ref.blob_key, data)
            await ensure_stored(self.blobs, index_key, index.SerializeToString(deterministic=True))
            await move_bundle_pointer(self.pointers, record.job, ref, index_key)
            await self.jobs.require(job_id)
        except JobNotFoundError:
            # Forgotten (DeleteUser) while this ran: take back what it wrote; then the worker
            # drops the task (docs/architecture.md, "Forgetting a user").
            await take_back_bundle(self.js, self.blobs, record.job, ref, index_key)
            raise
        # The pointer references the bundle, which may be an older one's very object (same
        # content) that a retention sweep condemned: keep it, or store it again.
        written = {ref.blob_key: data, index_key: index.SerializeToString(deterministic=True)}
        await self.fence.keep(written, lambda key: ensure_stored(self.blobs, key, written[key]))
        serving = await self._serving_model(user, digest)
        record = await self.jobs.update(job_id, mark_ready(ref, serving, training=self.training))
        log.info(
            "job %s: bundle %s with %d repositories",
            job_id,
            digest[:12],
            len(outcomes),
            extra={"job_id": job_id},
        )
        await self._ask_for_training(record)

    async def on_dead_letter(self, task: merge_tasks.MergeTask | None, failure: Failure) -> None:
        """The bundle could not be built: the job ends FAILED; the previous bundle serves."""
        if task is None:
            return
        await self.jobs.end(
            task.meta.job_id,
            job_pb2.JOB_STATE_FAILED,
            f"merge failed: {failure.public}"
            if failure.public
            else (
                "the bundle could not be built on any attempt; the task is parked for an "
                "operator to redrive, and the previous bundle still serves"
            ),
            code=job_pb2.ERROR_CODE_MERGE_FAILED,
            only_from=frozenset({job_pb2.JOB_STATE_MERGING}),
            missing_ok=True,
        )

    async def _serving_model(self, user: str, digest: str) -> bundle_pb2.ModelPointer | None:
        """The user's serving model when it was tuned on this bundle already (no training)."""
        if not self.training:
            return None
        pointer, _ = await read_model_pointer(self.models, user)
        return pointer if pointer is not None and pointer.bundle_hash == digest else None

    async def _ask_for_training(self, record: job_record_pb2.JobRecord) -> None:
        job = record.job
        if job.state != JobState.JOB_STATE_BUNDLE_READY or not self.training:
            return
        task = train_tasks.TrainTask(
            meta=task_pb2.TaskMeta(job_id=job.id, task_id=train_msg_id(job.id)),
            user=job.user,
            bundle_hash=job.bundle.content_hash,
            bundle_key=job.bundle.blob_key,
        )
        task.meta.enqueue_time.GetCurrentTime()
        await publish_task(self.js, TRAIN.subject, task, msg_id=task.meta.task_id)
