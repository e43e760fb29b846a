"""The TrainTask handler: job states around one training, idempotent under redelivery.

In this order:
    job not BUNDLE_READY or TRAINING    nothing (a final job above all): the task is acked
    job TRAINING, result stored         an earlier delivery of this job stored its result and
                                        died: move the pointer, DONE with that outcome
    model pointer is for this bundle    DONE, SKIPPED (no training)
    a newer bundle replaced this one    DONE, SKIPPED (the newer job's training follows)
    result stored for (bundle, config)  another job trained this content: move the pointer,
                                        DONE, SKIPPED ("reused")
    otherwise                           TRAINING (training RUNNING, attempt, step/total) ->
                                        train -> store -> move the model pointer -> DONE with
                                        PUBLISHED or NOT_IMPROVED (reason gives both metrics)

A redelivery mid-run starts the training again from scratch (the job stays TRAINING with the
new attempt number). An exception propagates to the worker, which retries with the stream's
backoff and finally parks the task in DEADLETTER; `on_dead_letter` then ends the job DONE
with training FAILED. The bundle and its pointer are never touched here (guarantee 7 in
docs/architecture.md).

Metrics: each handled task counts in contextmesh_training_runs_total by its outcome, each
failed attempt as `failed`; a fine-tuning run is timed, and both models' held-out MRR@10 go
into contextmesh_training_mrr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.train.v1 import tasks_pb2 as train_tasks
from nats.js.kv import KeyValue

from meshkit import metrics
from meshkit.blob import BlobStore
from meshkit.config import TrainSettings
from meshkit.domain.bundle import content_hash
from meshkit.domain.documents import Bundle
from meshkit.domain.embedding import base_model_path
from meshkit.domain.pointers import read_model_pointer
from meshkit.errors import JobNotFoundError
from meshkit.jobs import TRAINING_STATES, JobStore
from meshkit.worker import Delivery, Failure, PermanentError
from trainsvc.background import run_in_daemon_thread
from trainsvc.evaluate import Metrics
from trainsvc.finetune import TrainConfig, base_model_identity
from trainsvc.outcome import TrainingOutcome, finish_training, outcome_reason, start_training
from trainsvc.pipeline import NotEnoughData, TrainResult, train_on_bundle
from trainsvc.pointers import latest_bundle_hash, move_model_pointer, take_back_model
from trainsvc.progress import ProgressReporter
from trainsvc.store import Manifest, ModelLayout, read_manifest, store_result

__all__ = ["TrainFn", "TrainHandler"]

log = logging.getLogger(__name__)

JobState = job_pb2.JobState
TrainingState = job_pb2.TrainingState

TrainFn = Callable[..., TrainResult]
"""train_on_bundle's signature; tests substitute one to force an outcome."""


class TrainHandler:
    """Handles TrainTasks for one trainsvc replica (the worker runs one at a time)."""

    task_type = train_tasks.TrainTask

    def __init__(
        self,
        *,
        jobs: JobStore,
        models: KeyValue,
        bundles: KeyValue,
        blobs: BlobStore,
        settings: TrainSettings,
        progress_interval_s: float = 2.0,
        train: TrainFn = train_on_bundle,
    ) -> None:
        self.jobs = jobs
        self.models = models
        self.bundles = bundles
        self.blobs = blobs
        self.settings = settings
        self.progress_interval_s = progress_interval_s
        self.train = train
        self.config = TrainConfig.from_settings(settings)
        self._base_model: str | None = None
        self._config_digest: str | None = None

    async def handle(self, task: train_tasks.TrainTask, delivery: Delivery) -> None:
        job_id = task.meta.job_id
        try:
            record, _ = await self.jobs.get(job_id)
        except JobNotFoundError:
            log.warning("job %s: no record (expired?); train task dropped", job_id)
            return
        if record.job.state not in TRAINING_STATES:
            log.info("job %s is %s; train task ignored", job_id, JobState.Name(record.job.state))
            return
        layout = ModelLayout(task.user, task.bundle_hash, await self._digest())
        try:
            outcome = await self._outcome(task, delivery, layout, record)
            await self.jobs.require(job_id)
        except JobNotFoundError:
            # Forgotten (DeleteUser) while this ran: take back what it wrote; then the worker
            # drops the task (docs/architecture.md, "Forgetting a user").
            await take_back_model(self.jobs.js, self.blobs, task.user, layout.prefix)
            raise
        await self.jobs.update(job_id, finish_training(outcome))
        metrics.TRAINING_RUNS.labels(
            TrainingState.Name(outcome.state).removeprefix("TRAINING_STATE_").lower()
        ).inc()
        log.info(
            "job %s: training %s: %s",
            job_id,
            TrainingState.Name(outcome.state),
            outcome.reason,
            extra={"job_id": job_id},
        )

    async def _outcome(
        self,
        task: train_tasks.TrainTask,
        delivery: Delivery,
        layout: ModelLayout,
        record: job_record_pb2.JobRecord,
    ) -> TrainingOutcome:
        manifest = await read_manifest(self.blobs, layout)
        resumed = record.job.state == JobState.JOB_STATE_TRAINING
        if manifest is not None and resumed:
            # This job's earlier delivery stored its result and died before finishing.
            return await self._adopt(task, manifest, resumed=True)
        if (skipped := await self._skip_reason(task)) is not None:
            return skipped
        if manifest is not None:
            return await self._adopt(task, manifest, resumed=False)
        try:
            return await self._train(task, delivery, layout)
        except Exception as exc:
            metrics.TRAINING_RUNS.labels("failed").inc()
            await self._note_failure(task.meta.job_id, delivery, exc)
            raise

    async def on_dead_letter(self, task: train_tasks.TrainTask | None, failure: Failure) -> None:
        """The task failed its last attempt (or crashed its worker every time): DONE, with
        training FAILED and the bundle untouched."""
        if task is None:
            return

        def fail(record: job_record_pb2.JobRecord) -> bool:
            if record.job.state not in TRAINING_STATES:
                return False
            record.job.state = JobState.JOB_STATE_DONE
            record.job.training.state = TrainingState.TRAINING_STATE_FAILED
            record.job.training.reason = (
                f"training failed: {failure.public}"
                if failure.public
                else "training failed on its last attempt; the task is parked for an operator "
                "to redrive, and the previous model keeps serving"
            )[:2000]
            return True

        with contextlib.suppress(JobNotFoundError):
            await self.jobs.update(task.meta.job_id, fail)

    async def _note_failure(self, job_id: str, delivery: Delivery, exc: Exception) -> None:
        """Say on the job that an attempt failed; the worker retries (or parks) the task."""
        if delivery.is_last or isinstance(exc, PermanentError):
            return  # on_dead_letter writes the final word
        # The error's own text is for operators (logs, the dead letter), not for the caller.
        note = f"attempt {delivery.attempt} failed; it will be retried"

        def mutate(record: job_record_pb2.JobRecord) -> bool:
            if record.job.state != JobState.JOB_STATE_TRAINING:
                return False
            record.job.training.reason = note[:2000]
            return True

        with contextlib.suppress(Exception):
            await self.jobs.update(job_id, mutate)

    # decisions

    async def _skip_reason(self, task: train_tasks.TrainTask) -> TrainingOutcome | None:
        pointer, _ = await read_model_pointer(self.models, task.user)
        if pointer is not None and pointer.bundle_hash == task.bundle_hash:
            serving = "the tuned model" if pointer.tuned else "the base model"
            return TrainingOutcome(
                TrainingState.TRAINING_STATE_SKIPPED,
                f"a model for bundle {task.bundle_hash[:12]} already exists; {serving} serves",
                Metrics.from_proto(pointer.base_metrics),
                Metrics.from_proto(pointer.metrics),
                pointer.model_key,
            )
        latest = await latest_bundle_hash(self.bundles, task.user)
        if latest is not None and latest != task.bundle_hash:
            return TrainingOutcome(
                TrainingState.TRAINING_STATE_SKIPPED,
                f"a newer bundle ({latest[:12]}) replaced bundle {task.bundle_hash[:12]}; "
                "its own training follows",
            )
        return None

    async def _adopt(
        self, task: train_tasks.TrainTask, manifest: Manifest, *, resumed: bool
    ) -> TrainingOutcome:
        """A run with this bundle and config finished before: serve its result."""
        outcome = await self._publish(task, manifest)
        if resumed or outcome.state == TrainingState.TRAINING_STATE_SKIPPED:
            return outcome
        return TrainingOutcome(
            TrainingState.TRAINING_STATE_SKIPPED,
            f"bundle {task.bundle_hash[:12]} was already trained with this configuration; "
            f"reused its result ({outcome.reason})",
            outcome.base,
            outcome.tuned,
            outcome.model_key,
        )

    async def _train(
        self, task: train_tasks.TrainTask, delivery: Delivery, layout: ModelLayout
    ) -> TrainingOutcome:
        job_id = task.meta.job_id
        await self.jobs.update(job_id, start_training(delivery.attempt))
        bundle = await self._load_bundle(task)
        stop = threading.Event()
        reporter = ProgressReporter(
            self.jobs, job_id, interval_s=self.progress_interval_s, stop=stop
        )
        reporter.start()
        base_model = await self._base()
        try:
            with tempfile.TemporaryDirectory(prefix="contextmesh-trainsvc-") as workdir:
                log.info(
                    "job %s: training on bundle %s (attempt %d)",
                    job_id,
                    task.bundle_hash[:12],
                    delivery.attempt,
                    extra={"job_id": job_id},
                )
                try:
                    with metrics.TRAINING_DURATION.time():
                        result = await run_in_daemon_thread(
                            lambda: self.train(
                                bundle,
                                self.config,
                                base_model=base_model,
                                device_setting=self.settings.device,
                                workdir=Path(workdir),
                                on_progress=reporter.report,
                                should_stop=stop.is_set,
                            ),
                            stop=stop,
                            name=f"train-{job_id}",
                        )
                except NotEnoughData as exc:
                    return TrainingOutcome(TrainingState.TRAINING_STATE_SKIPPED, str(exc))
                manifest = await store_result(self.blobs, layout, result)
                metrics.TRAINING_MRR.labels("base").observe(manifest.base.mrr_at_10)
                metrics.TRAINING_MRR.labels("tuned").observe(manifest.tuned.mrr_at_10)
        finally:
            await reporter.close()
        return await self._publish(task, manifest)

    async def _publish(self, task: train_tasks.TrainTask, manifest: Manifest) -> TrainingOutcome:
        pointer = bundle_pb2.ModelPointer(
            model_key=manifest.model_key,
            bundle_hash=task.bundle_hash,
            embeddings_key=manifest.embeddings_key,
            metrics=manifest.tuned.to_proto(),
            base_metrics=manifest.base.to_proto(),
            tuned=manifest.improved,
        )
        pointer.create_time.GetCurrentTime()
        moved = await move_model_pointer(self.models, self.bundles, task.user, pointer)
        if not moved:
            return TrainingOutcome(
                TrainingState.TRAINING_STATE_SKIPPED,
                "a newer bundle replaced this one during training; the result is stored "
                f"({outcome_reason(manifest.improved, manifest.base, manifest.tuned)}) "
                "but does not serve",
                manifest.base,
                manifest.tuned,
            )
        state = (
            TrainingState.TRAINING_STATE_PUBLISHED
            if manifest.improved
            else TrainingState.TRAINING_STATE_NOT_IMPROVED
        )
        return TrainingOutcome(
            state,
            outcome_reason(manifest.improved, manifest.base, manifest.tuned),
            manifest.base,
            manifest.tuned,
            manifest.model_key,
        )

    # inputs

    async def _load_bundle(self, task: train_tasks.TrainTask) -> Bundle:
        data = await self.blobs.get(task.bundle_key)
        if content_hash(data) != task.bundle_hash:
            raise PermanentError(
                f"bundle {task.bundle_key} does not hash to {task.bundle_hash}: refusing to train"
            )
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise PermanentError(f"bundle {task.bundle_key} is not JSON: {exc}") from None
        try:
            return Bundle.from_json(document)
        except ValueError:
            raise PermanentError(f"bundle {task.bundle_key} is not a bundle document") from None

    async def _base(self) -> str:
        if self._base_model is None:
            self._base_model = base_model_path(self.settings.model_path)
        return self._base_model

    async def _digest(self) -> str:
        if self._config_digest is None:
            identity = await asyncio.to_thread(base_model_identity, await self._base())
            self._config_digest = self.config.digest(identity)
        return self._config_digest
