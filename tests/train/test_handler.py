"""The TrainTask handler against a real nats-server: states, publication, skips, failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2
from prometheus_client import REGISTRY

from meshkit.blob import BlobStore
from meshkit.config import TrainSettings
from meshkit.domain.documents import Bundle
from meshkit.domain.passages import bundle_passages
from meshkit.domain.pointers import read_model_pointer
from meshkit.erasure import purge
from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore
from meshkit.topology import Buckets
from meshkit.worker import Delivery, Failure
from tests.train.support import (
    bundle,
    prepare_job,
    repo,
    sample_bundle,
    sample_repositories,
    store_bundle,
)
from trainsvc.evaluate import Metrics
from trainsvc.handler import TrainHandler
from trainsvc.pipeline import TrainResult, train_on_bundle
from trainsvc.pointers import move_model_pointer

JobState = job_pb2.JobState
TS = job_pb2.TrainingState

BASE = Metrics(0.5, 0.4, 0.8, 20)
BETTER = Metrics(0.75, 0.6, 0.9, 20)
WORSE = Metrics(0.45, 0.35, 0.8, 20)


class FakeTraining:
    """Stands in for train_on_bundle with a chosen outcome, recording its calls."""

    def __init__(self, tuned: Metrics) -> None:
        self.tuned = tuned
        self.calls = 0

    def __call__(
        self,
        document: Bundle,
        config: Any,
        *,
        workdir: Path,
        on_progress: Callable[[int, int], None],
        **_: Any,
    ) -> TrainResult:
        self.calls += 1
        on_progress(0, 4)
        on_progress(4, 4)
        passages = tuple(bundle_passages(document))
        improved = self.tuned.mrr_at_10 > BASE.mrr_at_10
        model_dir = None
        if improved:
            model_dir = workdir / "model"
            (model_dir / "1_Pooling").mkdir(parents=True)
            (model_dir / "modules.json").write_text("[]")
            (model_dir / "1_Pooling" / "config.json").write_text("{}")
        return TrainResult(
            improved=improved,
            base=BASE,
            tuned=self.tuned,
            steps=4,
            pairs=40,
            passages=passages,
            model_dir=model_dir,
            embeddings=np.ones((len(passages), 4), dtype=np.float32) if improved else None,
            seconds=0.1,
            device="cpu",
        )


def delivery(attempt: int = 1) -> Delivery:
    return Delivery(msg=None, attempt=attempt, max_deliver=3)  # type: ignore[arg-type]


async def make_handler(js: Any, blobs: BlobStore, model: Path, train: Any) -> TrainHandler:
    return TrainHandler(
        jobs=await JobStore.open(js),
        models=await js.key_value(Buckets.MODELS.name),
        bundles=await js.key_value(Buckets.BUNDLES.name),
        blobs=blobs,
        settings=TrainSettings(model_path=str(model)),
        progress_interval_s=0.05,
        train=train,
    )


async def run_job(
    handler: TrainHandler, js: Any, blobs: BlobStore, document: Bundle
) -> tuple[job_pb2.Job, job_pb2.BundleRef]:
    """Store document as a new job's bundle, let the handler take its train task, and return
    the job as it ended, with its bundle."""
    job_id, ref, task = await prepare_job(js, handler.jobs, blobs, document)
    await handler.handle(task, delivery())
    return (await handler.jobs.get(job_id))[0].job, ref


async def test_a_better_model_is_published(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    fake = FakeTraining(BETTER)
    handler = await make_handler(js, blobs, tiny_model_dir, fake)
    job, ref = await run_job(handler, js, blobs, sample_bundle(user))

    assert job.state == JobState.JOB_STATE_DONE
    assert job.training.state == TS.TRAINING_STATE_PUBLISHED
    assert (job.training.step, job.training.total_steps, job.training.attempt) == (4, 4, 1)
    assert Metrics.from_proto(job.training.tuned) == BETTER
    assert Metrics.from_proto(job.training.base) == BASE
    assert "beat the base model" in job.training.reason and "0.750" in job.training.reason
    pointer, _ = await read_model_pointer(handler.models, user)
    assert pointer is not None and pointer.tuned and pointer.bundle_hash == ref.content_hash
    assert pointer.model_key == job.training.model_key
    assert pointer.model_key.startswith(f"models/{user}/{ref.content_hash}/")
    assert await blobs.exists(f"{pointer.model_key}/modules.json")
    assert await blobs.exists(f"{pointer.model_key}/1_Pooling/config.json")
    assert await blobs.exists(pointer.embeddings_key)
    stored = json.loads(await blobs.get(pointer.embeddings_key.replace(".npy", ".passages.json")))
    assert len(stored["passages"]) == len(bundle_passages(sample_bundle(user)))


async def test_a_model_that_is_not_better_leaves_the_base_serving(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    handler = await make_handler(js, blobs, tiny_model_dir, FakeTraining(WORSE))
    job, _ = await run_job(handler, js, blobs, sample_bundle(user))

    assert job.state == JobState.JOB_STATE_DONE
    assert job.training.state == TS.TRAINING_STATE_NOT_IMPROVED
    assert "keeps serving" in job.training.reason
    assert (
        "tuned MRR@10 0.450" in job.training.reason and "base MRR@10 0.500" in job.training.reason
    )
    assert job.training.model_key == ""
    pointer, _ = await read_model_pointer(handler.models, user)
    assert pointer is not None and not pointer.tuned and pointer.model_key == ""
    assert [b async for b in blobs.list(f"models/{user}/")][-1].key.endswith("manifest.json")


async def test_a_bundle_that_already_has_a_model_is_skipped(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    fake = FakeTraining(BETTER)
    handler = await make_handler(js, blobs, tiny_model_dir, fake)
    await run_job(handler, js, blobs, sample_bundle(user))
    job, _ = await run_job(handler, js, blobs, sample_bundle(user))

    assert fake.calls == 1
    assert job.state == JobState.JOB_STATE_DONE
    assert job.training.state == TS.TRAINING_STATE_SKIPPED
    assert "already exists" in job.training.reason and job.training.model_key


async def test_a_stored_result_is_reused_without_training(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    fake = FakeTraining(BETTER)
    handler = await make_handler(js, blobs, tiny_model_dir, fake)
    await run_job(handler, js, blobs, sample_bundle(user))
    await handler.models.delete(user)  # as if the pointer moved elsewhere meanwhile

    # Another job with the same content: adopts the manifest, trains nothing.
    job, _ = await run_job(handler, js, blobs, sample_bundle(user))
    assert fake.calls == 1
    assert job.training.state == TS.TRAINING_STATE_SKIPPED
    assert "reused" in job.training.reason
    pointer, _ = await read_model_pointer(handler.models, user)
    assert pointer is not None and pointer.tuned and pointer.model_key == job.training.model_key

    # A redelivery to a job that crashed after storing its result ends as that result.
    await handler.models.delete(user)
    crashed_id, _, crashed = await prepare_job(js, handler.jobs, blobs, sample_bundle(user))

    def training(record: Any) -> bool:
        record.job.state = JobState.JOB_STATE_TRAINING
        return True

    await handler.jobs.update(crashed_id, training)
    await handler.handle(crashed, delivery(2))
    job = (await handler.jobs.get(crashed_id))[0].job
    assert fake.calls == 1 and job.training.state == TS.TRAINING_STATE_PUBLISHED

    # ... also when the crash came after the pointer moved, not only before.
    late_id, _, late = await prepare_job(js, handler.jobs, blobs, sample_bundle(user))
    await handler.jobs.update(late_id, training)
    await handler.handle(late, delivery(2))
    job = (await handler.jobs.get(late_id))[0].job
    assert fake.calls == 1 and job.training.state == TS.TRAINING_STATE_PUBLISHED


async def test_final_jobs_are_left_alone(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    fake = FakeTraining(BETTER)
    handler = await make_handler(js, blobs, tiny_model_dir, fake)
    job_id, _, task = await prepare_job(js, handler.jobs, blobs, sample_bundle(user))

    def cancel(record: Any) -> bool:
        record.job.state = JobState.JOB_STATE_CANCELLED
        return True

    before = await handler.jobs.update(job_id, cancel)
    await handler.handle(task, delivery())
    after, _ = await handler.jobs.get(job_id)
    assert fake.calls == 0 and after == before
    assert (await read_model_pointer(handler.models, user))[0] is None


async def test_a_newer_bundle_makes_training_pointless(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    fake = FakeTraining(BETTER)
    handler = await make_handler(js, blobs, tiny_model_dir, fake)
    job_id, _, task = await prepare_job(js, handler.jobs, blobs, sample_bundle(user))
    newer = bundle(user, sample_repositories(user)[:3])
    await store_bundle(js, blobs, newer, "01J0000000000000000000NEWR")
    await handler.handle(task, delivery())
    job = (await handler.jobs.get(job_id))[0].job
    assert fake.calls == 0
    assert job.training.state == TS.TRAINING_STATE_SKIPPED and "newer bundle" in job.training.reason


async def test_the_model_pointer_never_moves_to_an_older_bundle(js: Any, user: str) -> None:
    models = await js.key_value(Buckets.MODELS.name)
    bundles = await js.key_value(Buckets.BUNDLES.name)
    latest = bundle_pb2.BundlePointer(bundle=job_pb2.BundleRef(content_hash="b" * 64))
    await bundles.put(user, latest.SerializeToString())
    current = bundle_pb2.ModelPointer(
        bundle_hash="b" * 64, model_key=f"models/{user}/b", tuned=True
    )
    assert await move_model_pointer(models, bundles, user, current)
    older = bundle_pb2.ModelPointer(bundle_hash="a" * 64, model_key=f"models/{user}/a", tuned=True)
    assert not await move_model_pointer(models, bundles, user, older)
    pointer, _ = await read_model_pointer(models, user)
    assert pointer == current


async def test_too_little_content_is_skipped_with_a_reason(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    handler = await make_handler(js, blobs, tiny_model_dir, train_on_bundle)
    lonely = bundle(user, [repo("only", owner=user, description="The one repository.")])
    job, _ = await run_job(handler, js, blobs, lonely)
    assert job.state == JobState.JOB_STATE_DONE
    assert job.training.state == TS.TRAINING_STATE_SKIPPED
    assert "too little to train on" in job.training.reason


async def test_the_job_passes_through_training_with_progress(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    """The real pipeline on the tiny model; every job update is watched."""
    handler = await make_handler(js, blobs, tiny_model_dir, train_on_bundle)
    job_id, _, task = await prepare_job(js, handler.jobs, blobs, sample_bundle(user))
    seen: list[job_pb2.Job] = []
    replayed = asyncio.Event()

    async def watch() -> None:
        async for job in handler.jobs.watch(job_id):
            seen.append(job)
            replayed.set()

    watching = asyncio.create_task(watch())
    await asyncio.wait_for(replayed.wait(), 10)  # the state before training is seen first
    await handler.handle(task, delivery())
    await asyncio.wait_for(watching, 10)

    states = [(j.state, j.training.state) for j in seen]
    assert states[0] == (JobState.JOB_STATE_BUNDLE_READY, TS.TRAINING_STATE_QUEUED)
    assert (JobState.JOB_STATE_TRAINING, TS.TRAINING_STATE_RUNNING) in states
    running = [j for j in seen if j.state == JobState.JOB_STATE_TRAINING]
    assert any(j.training.total_steps > 0 for j in running)
    final = seen[-1]
    assert final.state == JobState.JOB_STATE_DONE
    assert final.training.state in (TS.TRAINING_STATE_PUBLISHED, TS.TRAINING_STATE_NOT_IMPROVED)
    assert final.training.base.queries > 0 and final.training.tuned.queries > 0
    assert final.training.step == final.training.total_steps > 0


async def test_a_failed_last_attempt_ends_the_job_with_its_bundle(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    handler = await make_handler(js, blobs, tiny_model_dir, FakeTraining(BETTER))
    job_id, ref, task = await prepare_job(js, handler.jobs, blobs, sample_bundle(user))
    await handler.on_dead_letter(task, Failure("RuntimeError: out of memory"))
    await handler.on_dead_letter(task, Failure("RuntimeError: out of memory"))  # every replica
    job = (await handler.jobs.get(job_id))[0].job
    assert job.state == JobState.JOB_STATE_DONE and job.bundle == ref
    assert job.training.state == TS.TRAINING_STATE_FAILED
    # The internal error is the operators' (the dead letter has it), not the caller's.
    assert "last attempt" in job.training.reason and "redrive" in job.training.reason
    assert "RuntimeError" not in job.training.reason
    await handler.on_dead_letter(None, Failure("undecodable"))  # nothing to record or raise


@pytest.fixture(autouse=True)
def _offline() -> None:
    from meshkit.domain.embedding import prepare_offline

    prepare_offline()


async def test_each_training_counts_by_outcome_with_its_time_and_both_mrrs(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    def snapshot() -> tuple[float, ...]:
        return (
            value("contextmesh_training_runs_total", outcome="published"),
            value("contextmesh_training_runs_total", outcome="failed"),
            value("contextmesh_training_duration_seconds_count"),
            value("contextmesh_training_mrr_sum", model="base"),
            value("contextmesh_training_mrr_sum", model="tuned"),
        )

    before = snapshot()
    handler = await make_handler(js, blobs, tiny_model_dir, FakeTraining(BETTER))
    await run_job(handler, js, blobs, sample_bundle(user))

    def broken(*args: Any, **kwargs: Any) -> TrainResult:
        raise RuntimeError("out of memory")

    failing = await make_handler(js, blobs, tiny_model_dir, broken)
    _, _, task = await prepare_job(js, failing.jobs, blobs, sample_bundle(f"{user}-2"))
    with pytest.raises(RuntimeError):
        await failing.handle(task, delivery())
    published, failed, timed, base, tuned = (a - b for a, b in zip(snapshot(), before, strict=True))
    assert (published, failed, timed) == (1, 1, 2)
    assert (base, tuned) == pytest.approx((BASE.mrr_at_10, BETTER.mrr_at_10))


class ForgetsAfterPublishing:
    """The user's model pointers, with DeleteUser's purge of the job landing right after the
    pointer moves: after every write of the training, before its check of the job."""

    def __init__(self, models: Any, js: Any, job_id: str) -> None:
        self._models, self._js, self._job_id = models, js, job_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._models, name)

    async def create(self, key: str, value: bytes) -> int:
        written: int = await self._models.create(key, value)
        await purge(self._js, Buckets.JOBS, self._job_id)
        return written


async def test_a_training_whose_job_is_forgotten_meanwhile_takes_back_what_it_wrote(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str
) -> None:
    handler = await make_handler(js, blobs, tiny_model_dir, FakeTraining(BETTER))
    job_id, _, task = await prepare_job(js, handler.jobs, blobs, sample_bundle(user))
    handler.models = ForgetsAfterPublishing(handler.models, js, job_id)
    with pytest.raises(JobNotFoundError):
        await handler.handle(task, delivery())
    pointer, _ = await read_model_pointer(handler.models, user)
    assert pointer is None
    assert [b.key async for b in blobs.list(f"models/{user}/")] == []
