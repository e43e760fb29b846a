"""Shared by the worker tests: a private work stream, a task, a recording handler, and
what a worker left behind (dead letters, pending tasks)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable

from contextmesh.job.v1 import job_record_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError

from meshkit.domain.ids import new_job_id
from meshkit.jobs import JobStore
from meshkit.topology import DEADLETTER, MERGE, WorkStream, consumer_config, work_stream_config
from meshkit.worker import Delivery, Failure, Worker
from tests.support.polling import until

HandleFn = Callable[[merge_tasks.MergeTask, Delivery], Awaitable[None]]


class RecordingHandler:
    """A MergeTask handler that runs the test's function (none: every task succeeds) and
    records every parked task as (job id, failure); the job id is "" for a payload that
    could not be decoded."""

    task_type = merge_tasks.MergeTask

    def __init__(self, handle: HandleFn | None = None) -> None:
        self._handle = handle
        self.parked: list[tuple[str, Failure]] = []

    async def handle(self, task: merge_tasks.MergeTask, delivery: Delivery) -> None:
        if self._handle is not None:
            await self._handle(task, delivery)

    async def on_dead_letter(self, task: merge_tasks.MergeTask | None, failure: Failure) -> None:
        self.parked.append((task.meta.job_id if task is not None else "", failure))


async def make_stream(js: JetStreamContext, **overrides: object) -> WorkStream:
    """A private copy of the MERGE stream with short timings, so retries take milliseconds."""
    name = f"T{uuid.uuid4().hex[:8].upper()}"
    settings: dict[str, object] = {"ack_wait_s": 1.0, "retry_backoff_s": (0.1, 0.1)}
    ws = dataclasses.replace(
        MERGE, stream=name, subject=f"test.{name}", consumer=f"c{name}", **{**settings, **overrides}
    )  # type: ignore[arg-type]
    await js.add_stream(work_stream_config(ws, 1))
    await js.add_consumer(ws.stream, consumer_config(ws))
    return ws


def task(job_id: str | None = None) -> merge_tasks.MergeTask:
    job_id = job_id or new_job_id()
    return merge_tasks.MergeTask(
        meta=task_pb2.TaskMeta(job_id=job_id, task_id=f"merge:{job_id}"), user="alice", total=1
    )


async def recorded(js: JetStreamContext, job_id: str | None = None) -> merge_tasks.MergeTask:
    """A task whose job has a record, as every task a service publishes has (a worker drops
    the tasks of a gone job and keeps no letter of them)."""
    t = task(job_id)
    record = job_record_pb2.JobRecord()
    record.job.id, record.job.user = t.meta.job_id, t.user
    with contextlib.suppress(KeyWrongLastSequenceError):  # recorded already
        await (await JobStore.open(js)).create(record)
    return t


async def run_until(worker: Worker, condition: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Run the worker until condition() holds (polled: the worker has no event to wait on)."""
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop, grace_s=2))
    try:
        await until(condition, limit_s, "the worker to get there")
    finally:
        stop.set()
        await runner


async def dead_letters(js: JetStreamContext, ws: WorkStream) -> list[task_pb2.DeadLetter]:
    sub = await js.subscribe(
        f"contextmesh.deadletter.{ws.stream}", stream=DEADLETTER, ordered_consumer=True
    )
    found = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            letter = task_pb2.DeadLetter()
            letter.ParseFromString(msg.data)
            found.append(letter)
    except Exception:
        pass
    await sub.unsubscribe()
    return found


async def pending(js: JetStreamContext, ws: WorkStream) -> int:
    return (await js.stream_info(ws.stream)).state.messages


async def drained(js: JetStreamContext, ws: WorkStream) -> bool:
    """No task left in the work stream: every one was acked (or parked and termed)."""
    return await pending(js, ws) == 0
