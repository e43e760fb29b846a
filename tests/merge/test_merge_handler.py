"""The merge handler against a real nats-server and the filesystem blob store: the bundle it
writes, the pointer it moves, the states it leaves the job in, and when it asks for
training."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from contextmesh.train.v1 import tasks_pb2 as train_tasks
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mergesvc.handler import MergeHandler
from meshkit.blob import BlobStore
from meshkit.blob.base import ensure_stored
from meshkit.domain.bundle import (
    bundle_key,
    canonical_json,
    content_hash,
    repo_result_key,
)
from meshkit.domain.ids import merge_msg_id, new_job_id, train_msg_id
from meshkit.domain.pointers import read_bundle_pointer
from meshkit.erasure import purge
from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore
from meshkit.topology import TRAIN, Buckets
from meshkit.worker import RetryLater
from tests.support.inproc import delivery, new_user, published

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus
TS = job_pb2.TrainingState


@dataclass
class World:
    js: JetStreamContext
    jobs: JobStore
    outcomes: KeyValue
    pointers: KeyValue
    models: KeyValue
    blobs: BlobStore
    user: str

    def handler(self, *, training: bool = True) -> MergeHandler:
        return MergeHandler(
            self.js,
            self.jobs,
            self.outcomes,
            self.pointers,
            self.models,
            self.blobs,
            training=training,
        )

    async def result(self, name: str, description: str) -> str:
        """Store a repository result as syncsvc does; return its key."""
        document = {
            "repository": f"{self.user}/{name}",
            "fingerprint": f"commit-of-{name}",
            "context": {"description": description},
            "readme": None,
        }
        data = canonical_json(document)
        key = repo_result_key(f"{self.user}/{name}", content_hash(data))
        await ensure_stored(self.blobs, key, data)
        return key

    async def merging_job(
        self, outcomes: list[sync_tasks.RepoOutcome], *, job_id: str | None = None
    ) -> merge_tasks.MergeTask:
        """A job whose outcomes are all stored and counted (MERGING), and its merge task."""
        job_id = job_id or new_job_id()
        for index, outcome in enumerate(outcomes):
            outcome.index = index
            await self.outcomes.create(f"{job_id}.{index}", outcome.SerializeToString())
        record = job_record_pb2.JobRecord(
            job=job_pb2.Job(
                id=job_id, user=self.user, state=JobState.JOB_STATE_MERGING, total=len(outcomes)
            )
        )
        record.job.create_time.GetCurrentTime()
        await self.jobs.create(record)
        return merge_tasks.MergeTask(
            meta=task_pb2.TaskMeta(job_id=job_id, task_id=merge_msg_id(job_id)),
            user=self.user,
            total=len(outcomes),
        )

    def synced(self, name: str, key: str) -> sync_tasks.RepoOutcome:
        return sync_tasks.RepoOutcome(
            repository=f"{self.user}/{name}",
            status=RepoStatus.REPO_STATUS_SYNCED,
            fingerprint=f"commit-of-{name}",
            result_key=key,
        )

    async def job(self, task: merge_tasks.MergeTask) -> job_record_pb2.JobRecord:
        return (await self.jobs.get(task.meta.job_id))[0]

    async def train_tasks(self) -> list[tuple[str, train_tasks.TrainTask]]:
        return await published(self.js, TRAIN, train_tasks.TrainTask)

    async def bundle(self, ref: job_pb2.BundleRef) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(await self.blobs.get(ref.blob_key))
        return document


@pytest.fixture
async def world(js: JetStreamContext, blobs: BlobStore) -> World:
    return World(
        js,
        await JobStore.open(js),
        await js.key_value(Buckets.OUTCOMES.name),
        await js.key_value(Buckets.BUNDLES.name),
        await js.key_value(Buckets.MODELS.name),
        blobs,
        new_user(),
    )


async def two_repositories(world: World) -> list[sync_tasks.RepoOutcome]:
    """beta synced, alpha unchanged since the last bundle: given out of name order."""
    beta = await world.result("beta", "A bread timer.")
    alpha = await world.result("alpha", "A tide predictor.")
    unchanged = world.synced("alpha", alpha)
    unchanged.status = RepoStatus.REPO_STATUS_UNCHANGED
    return [world.synced("beta", beta), unchanged]


async def test_the_bundle_is_stored_by_content_and_the_pointer_moves_to_it(world: World) -> None:
    task = await world.merging_job(await two_repositories(world))
    await world.handler().handle(task, delivery())

    record = await world.job(task)
    ref = record.job.bundle
    data = await world.blobs.get(ref.blob_key)
    assert (
        ref.blob_key
        == bundle_key(world.user, content_hash(data))
        == bundle_key(world.user, ref.content_hash)
    )
    assert (ref.repositories, ref.size_bytes) == (2, len(data))
    document = json.loads(data)
    assert document["user"] == world.user
    assert [r["repository"] for r in document["repositories"]] == [
        f"{world.user}/alpha",
        f"{world.user}/beta",
    ]
    assert document["repositories"][0]["context"]["description"] == "A tide predictor."
    assert [r["sync_error"] for r in document["repositories"]] == [None, None]

    pointer = await read_bundle_pointer(world.pointers, world.user)
    assert pointer is not None
    assert (pointer.bundle, pointer.job_id) == (ref, task.meta.job_id)
    index = bundle_pb2.BundleIndex()
    index.ParseFromString(await world.blobs.get(pointer.index_key))
    assert [(r.repository, r.status) for r in index.repositories] == [
        (f"{world.user}/alpha", RepoStatus.REPO_STATUS_UNCHANGED),
        (f"{world.user}/beta", RepoStatus.REPO_STATUS_SYNCED),
    ]


async def test_with_training_the_bundle_is_ready_and_one_train_task_follows(world: World) -> None:
    task = await world.merging_job(await two_repositories(world))
    await world.handler().handle(task, delivery())

    record = await world.job(task)
    assert record.job.state == JobState.JOB_STATE_BUNDLE_READY
    assert record.job.training.state == TS.TRAINING_STATE_QUEUED
    assert record.job.HasField("bundle_ready_time") and record.merges == 1
    trains = await world.train_tasks()
    assert [msg_id for msg_id, _ in trains] == [train_msg_id(task.meta.job_id)]
    ((_, train),) = trains
    assert (train.meta.job_id, train.user) == (task.meta.job_id, world.user)
    assert (train.bundle_hash, train.bundle_key) == (
        record.job.bundle.content_hash,
        record.job.bundle.blob_key,
    )

    # A redelivery (the ack was lost) merges nothing again and queues nothing new.
    await world.handler().handle(task, delivery(attempt=2))
    again = await world.job(task)
    assert again.merges == 1 and again.job.state == JobState.JOB_STATE_BUNDLE_READY
    assert len(await world.train_tasks()) == 1


async def test_without_training_the_job_is_done_when_the_bundle_is_ready(world: World) -> None:
    task = await world.merging_job(await two_repositories(world))
    await world.handler(training=False).handle(task, delivery())

    record = await world.job(task)
    assert record.job.state == JobState.JOB_STATE_DONE
    assert record.job.training.state == TS.TRAINING_STATE_DISABLED
    assert record.job.HasField("bundle_ready_time") and record.job.bundle.content_hash
    assert await world.train_tasks() == []


async def test_a_bundle_the_serving_model_was_tuned_on_asks_for_no_training(
    world: World,
) -> None:
    outcomes = await two_repositories(world)
    first = await world.merging_job(outcomes)
    await world.handler().handle(first, delivery())
    digest = (await world.job(first)).job.bundle.content_hash
    serving = bundle_pb2.ModelPointer(
        bundle_hash=digest,
        model_key=f"models/{world.user}/{digest}/model",
        tuned=True,
        metrics=job_pb2.EvalMetrics(mrr_at_10=0.9),
        base_metrics=job_pb2.EvalMetrics(mrr_at_10=0.8),
    )
    await world.models.put(world.user, serving.SerializeToString())

    # The same content again (a refresh that changed nothing): the same bundle, no training.
    again = await world.merging_job(await two_repositories(world))
    await world.handler().handle(again, delivery())
    record = await world.job(again)
    assert record.job.bundle.content_hash == digest
    assert record.job.state == JobState.JOB_STATE_DONE
    assert record.job.training.state == TS.TRAINING_STATE_SKIPPED
    assert digest[:12] in record.job.training.reason
    assert record.job.training.model_key == serving.model_key
    assert record.job.training.tuned.mrr_at_10 == pytest.approx(0.9)
    assert [t.meta.job_id for _, t in await world.train_tasks()] == [first.meta.job_id]

    # Changed content asks for training although a model serves the user.
    changed = await two_repositories(world)
    changed[0].result_key = await world.result("beta", "A bread timer, now with sourdough.")
    third = await world.merging_job(changed)
    await world.handler().handle(third, delivery())
    assert (await world.job(third)).job.state == JobState.JOB_STATE_BUNDLE_READY
    assert [t.meta.job_id for _, t in await world.train_tasks()] == [
        first.meta.job_id,
        third.meta.job_id,
    ]


async def test_failed_repositories_are_carried_into_the_bundle_with_their_reason(
    world: World,
) -> None:
    previous = await world.result("alpha", "A tide predictor.")
    kept = world.synced("alpha", previous)
    kept.status = RepoStatus.REPO_STATUS_FAILED
    kept.reason = "HTTP 502 from the source"
    never = sync_tasks.RepoOutcome(
        repository=f"{world.user}/beta",
        status=RepoStatus.REPO_STATUS_FAILED,
        fingerprint="commit-of-beta",
        warnings=["README.md could not be read"],
    )
    task = await world.merging_job([kept, never])
    await world.handler(training=False).handle(task, delivery())

    record = await world.job(task)
    assert record.job.state == JobState.JOB_STATE_DONE  # failures do not fail the job
    alpha, beta = (await world.bundle(record.job.bundle))["repositories"]
    # The previous result stays, marked with why it could not be refreshed.
    assert alpha["context"]["description"] == "A tide predictor."
    assert alpha["sync_error"] == "HTTP 502 from the source"
    # No previous result: an empty entry that still names the repository.
    assert (beta["repository"], beta["context"], beta["readme"]) == (
        f"{world.user}/beta",
        None,
        None,
    )
    assert beta["sync_error"] == "sync failed"
    assert beta["warnings"] == ["README.md could not be read"]
    pointer = await read_bundle_pointer(world.pointers, world.user)
    assert pointer is not None
    index = bundle_pb2.BundleIndex()
    index.ParseFromString(await world.blobs.get(pointer.index_key))
    assert [(r.status, r.reason, r.result_key) for r in index.repositories] == [
        (RepoStatus.REPO_STATUS_FAILED, "HTTP 502 from the source", previous),
        (RepoStatus.REPO_STATUS_FAILED, "", ""),
    ]


async def test_the_pointer_never_moves_back_to_an_older_jobs_bundle(world: World) -> None:
    # Ids made in the same millisecond order by their random part: sort to know which is newer.
    older_id, newer_id = sorted((new_job_id(), new_job_id()))
    older = await world.merging_job(
        [world.synced("alpha", await world.result("alpha", "Old text."))], job_id=older_id
    )
    newer = await world.merging_job(
        [world.synced("alpha", await world.result("alpha", "New text."))], job_id=newer_id
    )
    await world.handler().handle(newer, delivery())
    await world.handler().handle(older, delivery())  # finishes late

    pointer = await read_bundle_pointer(world.pointers, world.user)
    assert pointer is not None and pointer.job_id == newer_id
    assert pointer.bundle == (await world.job(newer)).job.bundle
    # The late job still ends with its own bundle, stored and ready.
    late = (await world.job(older)).job
    assert late.state == JobState.JOB_STATE_BUNDLE_READY
    assert await world.blobs.exists(late.bundle.blob_key)


async def test_a_merge_that_comes_too_early_is_retried_later(world: World) -> None:
    key = await world.result("alpha", "A tide predictor.")
    task = await world.merging_job([world.synced("alpha", key)])
    await world.outcomes.delete(f"{task.meta.job_id}.0")  # not stored yet, say
    with pytest.raises(RetryLater):
        await world.handler().handle(task, delivery())

    def still_syncing(record: job_record_pb2.JobRecord) -> bool:
        record.job.state = JobState.JOB_STATE_SYNCING
        return True

    await world.jobs.update(task.meta.job_id, still_syncing)
    with pytest.raises(RetryLater):
        await world.handler().handle(task, delivery())
    assert await read_bundle_pointer(world.pointers, world.user) is None
    assert await world.train_tasks() == []


async def test_a_final_job_is_left_alone(world: World) -> None:
    task = await world.merging_job(await two_repositories(world))
    ended = await world.jobs.end(
        task.meta.job_id,
        JobState.JOB_STATE_CANCELLED,
        "cancelled",
        code=job_pb2.ERROR_CODE_CANCELLED,
    )
    await world.handler().handle(task, delivery())
    assert await world.job(task) == ended
    assert await read_bundle_pointer(world.pointers, world.user) is None


class ForgetsAfterWriting:
    """The user's pointers, with DeleteUser's purge of the job landing right after the merge
    moves the pointer: after every write of the merge, before its check of the job."""

    def __init__(self, pointers: KeyValue, world: World, job_id: str) -> None:
        self._pointers, self._world, self._job_id = pointers, world, job_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pointers, name)

    async def create(self, key: str, value: bytes) -> int:
        written: int = await self._pointers.create(key, value)
        await purge(self._world.js, Buckets.JOBS, self._job_id)
        return written


async def test_a_merge_whose_job_is_forgotten_meanwhile_takes_back_what_it_wrote(
    world: World,
) -> None:
    task = await world.merging_job(await two_repositories(world))
    results = {b.key async for b in world.blobs.list(f"repos/{world.user}/")}
    world.pointers = ForgetsAfterWriting(world.pointers, world, task.meta.job_id)  # type: ignore[assignment]
    with pytest.raises(JobNotFoundError):
        await world.handler().handle(task, delivery())
    assert await read_bundle_pointer(world.pointers, world.user) is None
    # Only what syncsvc stored is left (syncsvc takes its own back); no bundle, no index.
    assert {b.key async for b in world.blobs.list()} >= results
    assert [b.key async for b in world.blobs.list(f"bundles/{world.user}/")] == []
    assert await world.train_tasks() == []
