"""Redrive: re-run a parked task's work in a new job, exactly once per dead letter.

The stream a letter came from is read from the subject it is parked on
(`contextmesh.deadletter.<STREAM>`), never from its payload, and the payload is decoded and
validated as that stream's task. Nothing is republished as it was stored: the redrive
starts a job, and the job publishes its own tasks to the subjects the topology names.

    DISCOVER, MERGE   a new refresh of the task's user
    SYNC              a new refresh of the task's user that fetches the repository again,
                      whatever its fingerprint says (the others are planned as usual)
    TRAIN             a new job, BUNDLE_READY with the task's bundle, and a train task for it
    NOTIFY            no job: the notification of the job it reports is delivered again,
                      under a delivery id of its own ("notify:<job>:redrive:<sequence>")

Each new job says where it came from (`Job.redrive`). Its id is claimed first, create-only,
in cm_redrives under the letter's sequence: a second redrive of the letter finds the claim
and answers that job, and a redrive that died after its claim is finished by the next call,
which creates only what is missing and republishes under the same message id.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.notify.v1 import tasks_pb2 as notify_tasks
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from contextmesh.train.v1 import tasks_pb2 as train_tasks
from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from gateway.refresh import Refresher, new_record
from meshkit.domain.ids import new_job_id, notify_redrive_msg_id, train_msg_id
from meshkit.errors import ConflictError, JobNotFoundError
from meshkit.jobs import JobStore
from meshkit.publish import publish_task
from meshkit.rpc import FailedPrecondition, NotFound
from meshkit.topology import (
    ALL_WORK_STREAMS,
    DEADLETTER,
    DEADLETTER_SUBJECT_PREFIX,
    DISCOVER,
    MERGE,
    NOTIFY,
    SYNC,
    TRAIN,
    Buckets,
)
from meshkit.worker import PermanentError, decode_task

__all__ = ["SUBJECT_OF", "Redriven", "Redriver", "read_letter"]

log = logging.getLogger(__name__)

TASK_OF: dict[str, type[Message]] = {
    DISCOVER.stream: sync_tasks.DiscoverTask,
    SYNC.stream: sync_tasks.SyncRepoTask,
    MERGE.stream: merge_tasks.MergeTask,
    TRAIN.stream: train_tasks.TrainTask,
    NOTIFY.stream: notify_tasks.NotifyTask,
}
"""The task each work stream carries: a letter's payload is decoded as its stream's task."""
SUBJECT_OF = {ws.stream: ws.subject for ws in ALL_WORK_STREAMS}
NO_MESSAGE_FOUND = 10057
"""JetStream's error code for deleting a message that is not there."""
GONE = frozenset({10037, 10043, NO_MESSAGE_FOUND})
"""JetStream's error codes for a message that is not (or no longer) in the stream."""


@dataclass(frozen=True)
class Letter:
    """A dead letter as stored, with the stream its subject names."""

    sequence: int
    stream: str
    letter: task_pb2.DeadLetter


@dataclass(frozen=True)
class Redriven:
    """What a redrive answers: the letter's job and stream, and the job that re-runs it."""

    sequence: int
    stream: str
    letter: task_pb2.DeadLetter
    job: job_pb2.Job


async def read_letter(js: JetStreamContext, sequence: int) -> Letter:
    """The dead letter at `sequence`; NotFound when there is none."""
    try:
        stored = await js.get_msg(DEADLETTER, sequence)
    except APIError as exc:
        if not isinstance(exc, NotFoundError) and exc.err_code not in GONE:
            raise
        raise NotFound(
            f"no dead letter with sequence {sequence}; list them with ListDeadLetters"
        ) from None
    letter = task_pb2.DeadLetter()
    letter.ParseFromString(stored.data or b"")
    stream = (stored.subject or "").removeprefix(f"{DEADLETTER_SUBJECT_PREFIX}.")
    return Letter(sequence, stream, letter)


class Redriver:
    """Starts the job that re-runs a dead letter's work, once per letter."""

    def __init__(
        self, js: JetStreamContext, jobs: JobStore, refresher: Refresher, redrives: KeyValue
    ) -> None:
        self.js = js
        self.jobs = jobs
        self.refresher = refresher
        self.redrives = redrives

    @classmethod
    async def open(cls, js: JetStreamContext) -> Redriver:
        """A redriver on its own connection (the ops identity): it starts jobs as a refresh
        does."""
        jobs = await JobStore.open(js)
        refresher = await Refresher.open(js, jobs)
        return cls(js, jobs, refresher, await js.key_value(Buckets.REDRIVES.name))

    async def redrive(self, sequence: int) -> Redriven:
        claimed = await self._claimed(sequence)
        if claimed is not None:
            try:
                record, _ = await self.jobs.get(claimed)
            except JobNotFoundError:
                pass  # the claiming call died before it recorded the job: finish its work
            else:
                return await self._again(sequence, record)
        found = await read_letter(self.js, sequence)
        task = self._task(found)
        if isinstance(task, notify_tasks.NotifyTask):
            return await self._notify(found, task)
        job_id = claimed or await self._claim(sequence)
        job = await self._start(job_id, found, task)
        await self._forget_letter(sequence)
        log.info(
            "dead letter %d (%s, job %s) redriven as job %s",
            sequence,
            found.stream,
            found.letter.job_id,
            job.id,
            extra={"job_id": job.id},
        )
        return Redriven(sequence, found.stream, found.letter, job)

    def _task(self, found: Letter) -> Message:
        kind = TASK_OF.get(found.stream)
        if kind is None:
            raise FailedPrecondition(
                f"dead letter {found.sequence} is parked from an unknown stream "
                f"{found.stream!r}; it cannot be redriven"
            )
        try:
            return decode_task(kind, found.letter.payload)
        except PermanentError as exc:
            raise FailedPrecondition(
                f"dead letter {found.sequence} holds a task that can never run ({exc}); "
                "it cannot be redriven"
            ) from None

    async def _claimed(self, sequence: int) -> str | None:
        try:
            entry = await self.redrives.get(str(sequence))
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry is not None and entry.value else None

    async def _claim(self, sequence: int) -> str:
        """Claim a new job id for the letter."""
        job_id = new_job_id()
        try:
            await self.redrives.create(str(sequence), job_id.encode())
        except KeyWrongLastSequenceError:
            raise ConflictError(
                f"dead letter {sequence} is being redriven by another call; "
                "redrive it again to get its job"
            ) from None
        return job_id

    async def _start(self, job_id: str, found: Letter, task: Message) -> job_pb2.Job:
        user: str = task.user  # type: ignore[attr-defined]
        record = new_record(job_id, user)
        origin = record.job.redrive
        origin.sequence, origin.stream, origin.job_id = (
            found.sequence,
            found.stream,
            found.letter.job_id,
        )
        if isinstance(task, sync_tasks.SyncRepoTask):
            origin.repository = task.repository
        if isinstance(task, sync_tasks.DiscoverTask):
            record.job.force = task.force
            record.job.resync.extend(task.resync)
        if isinstance(task, merge_tasks.MergeTask):
            await self._inherit(record.job, found.letter.job_id)
        if isinstance(task, train_tasks.TrainTask):
            return await self._train(record, task)
        return await self.refresher.start(record)

    async def _inherit(self, job: job_pb2.Job, failed_job_id: str) -> None:
        """A merge task carries no list of what to sync, so its new refresh takes the failed
        job's: a push job re-syncs the pushed repositories whatever their fingerprints say,
        and a forced one everything. A failed job that expired leaves a plain refresh."""
        try:
            failed, _ = await self.jobs.get(failed_job_id)
        except JobNotFoundError:
            return
        job.force = failed.job.force
        job.resync.extend(failed.job.resync)

    async def _train(
        self, record: job_record_pb2.JobRecord, task: train_tasks.TrainTask
    ) -> job_pb2.Job:
        """A job whose bundle is the parked task's, ready, with its training queued."""
        job = record.job
        job.state = job_pb2.JOB_STATE_BUNDLE_READY
        job.bundle.content_hash, job.bundle.blob_key = task.bundle_hash, task.bundle_key
        job.bundle_ready_time.CopyFrom(job.create_time)
        job.training.state = job_pb2.TRAINING_STATE_QUEUED
        try:
            await self.refresher.record(record)
        except KeyWrongLastSequenceError:
            record, _ = await self.jobs.get(job.id)
        return await self._publish_train(record)

    async def _notify(self, found: Letter, task: notify_tasks.NotifyTask) -> Redriven:
        """Deliver a parked notification again. The claim names the job it reports, so a
        second redrive answers that job (`_again`)."""
        try:
            record, _ = await self.jobs.get(task.meta.job_id)
        except JobNotFoundError:
            raise FailedPrecondition(
                f"dead letter {found.sequence} reports job {task.meta.job_id}, which has "
                "expired: there is nothing to report any more"
            ) from None
        # A concurrent call claimed it for the same job; its publish has the same id.
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.redrives.create(str(found.sequence), record.job.id.encode())
        await self._publish_notification(found.sequence, record.job)
        await self._forget_letter(found.sequence)
        log.info(
            "dead letter %d (NOTIFY) redriven: job %s notified again",
            found.sequence,
            record.job.id,
            extra={"job_id": record.job.id},
        )
        return Redriven(found.sequence, found.stream, found.letter, record.job)

    async def _publish_notification(self, sequence: int, job: job_pb2.Job) -> None:
        task = notify_tasks.NotifyTask(
            meta=task_pb2.TaskMeta(job_id=job.id, task_id=notify_redrive_msg_id(job.id, sequence)),
            user=job.user,
        )
        task.meta.enqueue_time.GetCurrentTime()
        await publish_task(self.js, NOTIFY.subject, task, msg_id=task.meta.task_id)

    async def _again(self, sequence: int, record: job_record_pb2.JobRecord) -> Redriven:
        """The letter was redriven already: make sure its job's first task is out, and answer
        that job. The publish repeats the first one's message id, so JetStream drops it."""
        job = record.job
        if job.redrive.sequence != sequence:
            # Not a job this letter started: the job a parked notification reports.
            await self._publish_notification(sequence, job)
            await self._forget_letter(sequence)
            letter = task_pb2.DeadLetter(job_id=job.id)
            return Redriven(sequence, NOTIFY.stream, letter, job)
        if job.state == job_pb2.JOB_STATE_QUEUED:
            await self.refresher.queue(record)
        elif job.state == job_pb2.JOB_STATE_BUNDLE_READY and job.redrive.stream == TRAIN.stream:
            await self._publish_train(record)
        await self._forget_letter(sequence)
        letter = task_pb2.DeadLetter(job_id=job.redrive.job_id)
        return Redriven(sequence, job.redrive.stream, letter, job)

    async def _publish_train(self, record: job_record_pb2.JobRecord) -> job_pb2.Job:
        job = record.job
        train = train_tasks.TrainTask(
            meta=task_pb2.TaskMeta(
                job_id=job.id, task_id=train_msg_id(job.id), enqueue_time=job.create_time
            ),
            user=job.user,
            bundle_hash=job.bundle.content_hash,
            bundle_key=job.bundle.blob_key,
        )
        await publish_task(self.js, TRAIN.subject, train, msg_id=train.meta.task_id)
        return job

    async def _forget_letter(self, sequence: int) -> None:
        try:
            await self.js.delete_msg(DEADLETTER, sequence)
        except APIError as exc:
            # Deleted already if another call redrove the letter first.
            if not isinstance(exc, NotFoundError) and exc.err_code not in GONE:
                raise
