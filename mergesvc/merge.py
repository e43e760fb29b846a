"""The merge: build a job's bundle from its repository outcomes, store it, point to it.

Idempotent from every angle a redelivery can reach it:
- the bundle and its index are content-addressed, created once (same inputs, same bytes);
- the user's pointer moves with compare-and-set, and never back to an older job's bundle;
- the job moves MERGING -> BUNDLE_READY in one compare-and-set that also counts the merge
  and stamps bundle_ready_time, so `merges` is 1 however often this runs;
- the train task carries Nats-Msg-Id "train:<job>", and a redelivery that finds the job
  already past MERGING only re-publishes it (a crash may have come between the two).

Training is a follow-up, never a gate: the job goes straight to DONE, and no train task is
published (trainsvc's GPU pool stays asleep), when training is off or when the model that
serves the user was tuned on this very bundle already, as after a refresh that changed
nothing. A new training configuration therefore applies at a user's next changed bundle,
as trainsvc's own skip rule always did.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from contextmesh.train.v1 import tasks_pb2 as train_tasks
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.blob.base import ensure_stored
from meshkit.domain.bundle import bundle_index_key, bundle_key, canonical_json, content_hash
from meshkit.domain.documents import Bundle, BundleRepository, RepositoryResult
from meshkit.domain.ids import train_msg_id
from meshkit.domain.pointers import bundle_pointer_problem, read_model_pointer
from meshkit.jobs import JobStore, Mutation, is_final
from meshkit.publish import publish_task
from meshkit.topology import TRAIN
from meshkit.worker import Delivery, RetryLater

__all__ = ["Merger", "build_bundle"]

log = logging.getLogger(__name__)

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus


def build_bundle(
    user: str,
    outcomes: list[sync_tasks.RepoOutcome],
    results: Mapping[str, RepositoryResult],
) -> Bundle:
    """The bundle: every repository's result, sorted by name. Job-specific outcomes stay out
    of it so that unchanged content keeps its hash."""
    repositories = []
    for outcome in sorted(outcomes, key=lambda o: o.repository.lower()):
        result = results.get(outcome.result_key) or RepositoryResult.placeholder(
            outcome.repository, outcome.fingerprint, tuple(outcome.warnings)
        )
        failed = outcome.status == RepoStatus.REPO_STATUS_FAILED
        repositories.append(
            BundleRepository(result, (outcome.reason or "sync failed") if failed else None)
        )
    return Bundle(user, tuple(repositories))


class Merger:
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
        outcomes = await self._outcomes(job_id, record.job.total)
        results = await self._results(outcomes)
        document = build_bundle(record.job.user, outcomes, results)
        data = canonical_json(document.to_json())
        digest = content_hash(data)
        ref = job_pb2.BundleRef(
            content_hash=digest,
            blob_key=bundle_key(record.job.user, digest),
            repositories=len(outcomes),
            size_bytes=len(data),
        )
        index = bundle_pb2.BundleIndex(
            user=record.job.user,
            content_hash=digest,
            repositories=[
                bundle_pb2.RepoEntry(
                    repository=o.repository,
                    fingerprint=o.fingerprint,
                    status=o.status,
                    warnings=o.warnings,
                    reason=o.reason,
                    result_key=o.result_key,
                )
                for o in sorted(outcomes, key=lambda o: o.repository.lower())
            ],
        )
        await ensure_stored(self.blobs, ref.blob_key, data)
        index_key = bundle_index_key(record.job.user, digest, job_id)
        await ensure_stored(self.blobs, index_key, index.SerializeToString(deterministic=True))
        await self._move_pointer(record.job, ref, index_key)
        serving = await self._serving_model(record.job.user, digest)
        record = await self.jobs.update(job_id, self._ready(ref, serving))
        log.info(
            "job %s: bundle %s with %d repositories",
            job_id,
            digest[:12],
            len(outcomes),
            extra={"job_id": job_id},
        )
        await self._ask_for_training(record)

    async def _outcomes(self, job_id: str, total: int) -> list[sync_tasks.RepoOutcome]:
        async def one(index: int) -> sync_tasks.RepoOutcome:
            entry = await self.outcomes.get(f"{job_id}.{index}")
            outcome = sync_tasks.RepoOutcome()
            outcome.ParseFromString(entry.value or b"")
            return outcome

        found: list[sync_tasks.RepoOutcome] = []
        try:
            for start in range(0, total, 128):
                found += await asyncio.gather(
                    *(one(i) for i in range(start, min(total, start + 128)))
                )
        except KeyNotFoundError:
            raise RetryLater(1.0, f"job {job_id}: an outcome is not stored yet") from None
        return found

    async def _results(self, outcomes: list[sync_tasks.RepoOutcome]) -> dict[str, RepositoryResult]:
        keys = sorted({o.result_key for o in outcomes if o.result_key})
        results: dict[str, RepositoryResult] = {}

        async def load(key: str) -> None:
            results[key] = RepositoryResult.from_json(json.loads(await self.blobs.get(key)))

        for start in range(0, len(keys), 32):
            await asyncio.gather(*(load(k) for k in keys[start : start + 32]))
        return results

    async def _move_pointer(self, job: job_pb2.Job, ref: job_pb2.BundleRef, index_key: str) -> None:
        pointer = bundle_pb2.BundlePointer(bundle=ref, index_key=index_key, job_id=job.id)
        pointer.create_time.GetCurrentTime()
        value = pointer.SerializeToString(deterministic=True)
        for _ in range(50):
            try:
                entry = await self.pointers.get(job.user)
            except KeyNotFoundError:
                entry = None
            try:
                if entry is None or not entry.value:
                    await self.pointers.create(job.user, value)
                    return
                current = bundle_pb2.BundlePointer()
                current.ParseFromString(entry.value)
                # Job ids sort by creation time: never replace a newer job's bundle (unless
                # the pointer is foreign: keys outside the user's prefix, meshkit.domain.pointers).
                if current.job_id >= job.id and bundle_pointer_problem(current, job.user) is None:
                    return
                await self.pointers.update(job.user, value, last=entry.revision)
                return
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"could not move the bundle pointer of {job.user!r}")

    async def _serving_model(self, user: str, digest: str) -> bundle_pb2.ModelPointer | None:
        """The user's serving model when it was tuned on this bundle already (no training)."""
        if not self.training:
            return None
        pointer, _ = await read_model_pointer(self.models, user)
        return pointer if pointer is not None and pointer.bundle_hash == digest else None

    def _ready(self, ref: job_pb2.BundleRef, serving: bundle_pb2.ModelPointer | None) -> Mutation:
        training = self.training

        def mutate(record: job_record_pb2.JobRecord) -> bool:
            if record.job.state != JobState.JOB_STATE_MERGING:
                return False
            job = record.job
            record.merges += 1
            job.bundle.CopyFrom(ref)
            job.bundle_ready_time.GetCurrentTime()
            if not training:
                job.state = JobState.JOB_STATE_DONE
                job.training.state = job_pb2.TRAINING_STATE_DISABLED
            elif serving is not None:
                job.state = JobState.JOB_STATE_DONE
                job.training.state = job_pb2.TRAINING_STATE_SKIPPED
                job.training.reason = (
                    f"the serving model was tuned on bundle {ref.content_hash[:12]} already; "
                    "no training needed"
                )
                job.training.model_key = serving.model_key
                job.training.base.CopyFrom(serving.base_metrics)
                job.training.tuned.CopyFrom(serving.metrics)
            else:
                job.state = JobState.JOB_STATE_BUNDLE_READY
                job.training.state = job_pb2.TRAINING_STATE_QUEUED
            return True

        return mutate

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
