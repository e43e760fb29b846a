"""From job records to NOTIFY tasks: one task per job that ended, whoever ended it.

A job ends in several places (mergesvc and trainsvc finish it, discovery and the dead-letter
hooks fail it, the gateway cancels it and its sweeper ends stalled ones), and more may come.
Instead of each of them announcing it, notifysvc follows the job bucket's own stream through
a durable consumer (meshkit.topology.JOB_ENDS): every revision of every record passes here,
and a record in a final state becomes a NotifyTask for its user, when the user has a
callback. A revision is acked only after its task is published, so a crash in between
repeats the publish, which JetStream drops (Nats-Msg-Id "notify:<job>"): one task per job.
A record is never written again once final, so one final transition makes one task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from contextmesh.job.v1 import job_record_pb2
from contextmesh.notify.v1 import tasks_pb2 as notify_tasks
from contextmesh.task.v1 import task_pb2
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from meshkit.domain.callbacks import CallbackStore
from meshkit.domain.ids import notify_msg_id
from meshkit.jobs import is_final
from meshkit.publish import publish_task
from meshkit.topology import NOTIFY, JobFeed

__all__ = ["JobEndFeed"]

log = logging.getLogger(__name__)

KV_OPERATION = "KV-Operation"
"""Header of a KV delete or purge marker (no record in it)."""
RETRY_S = 2.0


class JobEndFeed:
    """Turns final job records into NotifyTasks, once each."""

    def __init__(
        self,
        js: JetStreamContext,
        feed: JobFeed,
        callbacks: CallbackStore,
        *,
        batch: int = 64,
        fetch_timeout_s: float = 1.0,
    ) -> None:
        self.js = js
        self.feed = feed
        self.callbacks = callbacks
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s

    async def run(self, stop: asyncio.Event) -> None:
        sub = await self.js.pull_subscribe_bind(durable=self.feed.consumer, stream=self.feed.stream)
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(self.batch, timeout=self.fetch_timeout_s)
                except (TimeoutError, NatsTimeoutError):
                    continue
                except Exception as exc:  # server unavailable during a re-election, etc.
                    log.warning("fetch from %s failed: %s", self.feed.stream, exc)
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    await self._one(msg)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _one(self, msg: Msg) -> None:
        try:
            await self.announce(msg)
        except Exception as exc:
            log.warning("job record %s not handled, retrying: %s", msg.subject, exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=RETRY_S)
        else:
            await msg.ack()

    async def announce(self, msg: Msg) -> notify_tasks.NotifyTask | None:
        """The NotifyTask a revision asks for, published; None when it asks for none."""
        if (msg.headers or {}).get(KV_OPERATION) or not msg.data:
            return None  # deleted or expired: nothing ended
        record = job_record_pb2.JobRecord()
        try:
            record.ParseFromString(msg.data)
        except DecodeError:
            log.error("undecodable job record on %s: skipped", msg.subject)
            return None
        job = record.job
        if not is_final(job.state) or await self.callbacks.get(job.user) is None:
            return None
        task = notify_tasks.NotifyTask(
            meta=task_pb2.TaskMeta(job_id=job.id, task_id=notify_msg_id(job.id)),
            user=job.user,
        )
        task.meta.enqueue_time.GetCurrentTime()
        await publish_task(self.js, NOTIFY.subject, task, msg_id=task.meta.task_id)
        return task
