"""The NotifyTask handler: POST a signed summary of an ended job to its user's callback.

Nothing is sent for a job that has not ended (a task can only be published for an ended
one, but a handler trusts the record, not the task) or for a user without a callback (it
was deleted since the job ended). A receiver that answers non-2xx, redirects, times out or
cannot be reached fails the attempt: the worker retries it on the NOTIFY stream's schedule
and parks it in DEADLETTER after the last, where an operator can redrive it. A URL or an
address contextmesh will not call parks the task at once: retrying cannot change that.

Every delivery of one task carries the same delivery id (its task id), so a receiver that
got a notification whose acknowledgement was lost can recognise the repeat.
"""

from __future__ import annotations

import logging

from contextmesh.notify.v1 import tasks_pb2 as notify_tasks

from meshkit.domain.callbacks import CallbackStore
from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore, is_final
from meshkit.worker import Delivery, Failure, PermanentError
from notifysvc.event import event_body, job_ended_event
from notifysvc.sender import CallbackRefused, CallbackSender
from notifysvc.signature import notification_headers

__all__ = ["NotifyHandler"]

log = logging.getLogger(__name__)


class NotifyHandler:
    """Handles NotifyTasks: one signed POST per delivery to the user's callback URL."""

    task_type = notify_tasks.NotifyTask

    def __init__(self, jobs: JobStore, callbacks: CallbackStore, sender: CallbackSender) -> None:
        self.jobs = jobs
        self.callbacks = callbacks
        self.sender = sender

    async def handle(self, task: notify_tasks.NotifyTask, delivery: Delivery) -> None:
        job_id = task.meta.job_id
        try:
            record, _ = await self.jobs.get(job_id)
        except JobNotFoundError:
            raise PermanentError(f"job {job_id} is gone (expired): nothing to report") from None
        job = record.job
        if not is_final(job.state):
            log.warning("job %s has not ended: nothing to notify", job_id)
            return
        stored = await self.callbacks.get(job.user)
        if stored is None:
            log.info("user %s has no callback any more: job %s not notified", job.user, job_id)
            return
        body = event_body(job_ended_event(job))
        headers = notification_headers(stored.secret, body, task.meta.task_id)
        try:
            status = await self.sender.post(stored.callback.url, body, headers)
        except CallbackRefused as exc:
            raise PermanentError(str(exc)) from None
        log.info("job %s: notified %s's callback (%d)", job_id, job.user, status)

    async def on_dead_letter(self, task: notify_tasks.NotifyTask | None, failure: Failure) -> None:
        """Nothing to record: the job has ended, and the letter says why it was not told."""
        job = task.meta.job_id if task is not None else "?"
        log.error("notification of job %s parked: %s", job, failure.reason)
