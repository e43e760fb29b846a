"""How a training ends up on its job: the outcome, its explanation, and the job-record
mutations that start and finish a training (each a no-op once the job has moved on)."""

from __future__ import annotations

from dataclasses import dataclass

from contextmesh.job.v1 import job_pb2, job_record_pb2

from meshkit.jobs import TRAINING_STATES, Mutation, is_final
from trainsvc.evaluate import Metrics, loses_paraphrases

__all__ = ["TrainingOutcome", "finish_training", "outcome_reason", "start_training"]

JobState = job_pb2.JobState
TrainingState = job_pb2.TrainingState


@dataclass(frozen=True)
class TrainingOutcome:
    """How a training ended, for the job: its state, why, and both models' metrics."""

    state: int
    reason: str
    base: Metrics | None = None
    tuned: Metrics | None = None
    model_key: str = ""


def outcome_reason(improved: bool, base: Metrics, tuned: Metrics) -> str:
    """The job's explanation of a training's outcome, with both models' metrics."""
    if improved:
        verdict = "the tuned model beat the base model"
    elif loses_paraphrases(tuned, base):
        verdict = (
            "the tuned model ranked paraphrased questions worse than the base model, "
            "so the base model keeps serving"
        )
    else:
        verdict = "the base model was at least as good as the tuned model, so it keeps serving"
    return f"{verdict}: tuned {tuned.summary()}; base {base.summary()}"


def start_training(attempt: int) -> Mutation:
    """The job is TRAINING, its training RUNNING on this attempt from step 0."""

    def mutate(record: job_record_pb2.JobRecord) -> bool:
        if record.job.state not in TRAINING_STATES:
            return False
        training = record.job.training
        before = record.SerializeToString(deterministic=True)
        record.job.state = JobState.JOB_STATE_TRAINING
        training.state = TrainingState.TRAINING_STATE_RUNNING
        training.attempt = attempt
        training.step = 0
        training.total_steps = 0
        training.reason = ""
        return record.SerializeToString(deterministic=True) != before

    return mutate


def finish_training(outcome: TrainingOutcome) -> Mutation:
    """The job is DONE with the training's outcome, unless it ended some other way first."""

    def mutate(record: job_record_pb2.JobRecord) -> bool:
        if is_final(record.job.state) or record.job.state not in TRAINING_STATES:
            return False
        record.job.state = JobState.JOB_STATE_DONE
        training = record.job.training
        training.state = outcome.state  # type: ignore[assignment]
        training.reason = outcome.reason[:2000]
        training.model_key = outcome.model_key
        if outcome.base is not None:
            training.base.CopyFrom(outcome.base.to_proto())
        if outcome.tuned is not None:
            training.tuned.CopyFrom(outcome.tuned.to_proto())
        if training.total_steps:
            training.step = training.total_steps
        return True

    return mutate
