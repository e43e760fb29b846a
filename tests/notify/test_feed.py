"""JobEndFeed: every job that ends, whichever service ends it, becomes one NotifyTask when its
user has a callback; revisions before the end, and users without a callback, make none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.notify.v1 import tasks_pb2 as notify_tasks
from nats.js import JetStreamContext

from meshkit.domain.callbacks import CallbackStore
from meshkit.domain.ids import new_job_id
from meshkit.jobs import JobStore
from meshkit.topology import JOB_ENDS, NOTIFY
from notifysvc.feed import JobEndFeed
from tests.notify.conftest import done_job


def moved_to(state: int) -> Callable[[job_record_pb2.JobRecord], bool]:
    def mutate(record: job_record_pb2.JobRecord) -> bool:
        record.job.state = state  # type: ignore[assignment]
        return True

    return mutate


def queued(job_id: str, user: str) -> job_record_pb2.JobRecord:
    record = done_job(job_id, user)
    record.job.state = job_pb2.JOB_STATE_QUEUED
    return record


async def notify_count(js: JetStreamContext) -> int:
    return (await js.stream_info(NOTIFY.stream)).state.messages


async def until_quiet(js: JetStreamContext, timeout_s: float = 10.0) -> None:
    """Until the feed has acked every revision so far."""
    async with asyncio.timeout(timeout_s):
        while True:
            info = await js.consumer_info(JOB_ENDS.stream, JOB_ENDS.consumer)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def feed(js: JetStreamContext, callbacks: CallbackStore) -> AsyncIterator[None]:
    stop = asyncio.Event()
    running = asyncio.create_task(JobEndFeed(js, JOB_ENDS, callbacks).run(stop))
    yield
    stop.set()
    await running


@pytest.mark.parametrize(
    "final", [job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED]
)
async def test_a_job_that_ends_makes_one_task(
    feed: None,
    js: JetStreamContext,
    jobs: JobStore,
    callbacks: CallbackStore,
    user: str,
    final: int,
) -> None:
    await callbacks.set(user, "https://hooks.example.com/cm")
    job_id = new_job_id()
    await jobs.create(queued(job_id, user))
    for state in (job_pb2.JOB_STATE_DISCOVERING, job_pb2.JOB_STATE_SYNCING):
        await jobs.update(job_id, moved_to(state))
    await until_quiet(js)
    assert await notify_count(js) == 0

    await jobs.update(job_id, moved_to(final))
    await until_quiet(js)

    assert await notify_count(js) == 1
    stored = await js.get_last_msg(NOTIFY.stream, NOTIFY.subject)
    task = notify_tasks.NotifyTask.FromString(stored.data or b"")
    assert (task.meta.job_id, task.meta.task_id, task.user) == (job_id, f"notify:{job_id}", user)


async def test_a_user_without_a_callback_makes_no_task(
    feed: None, js: JetStreamContext, jobs: JobStore, user: str
) -> None:
    job_id = new_job_id()
    await jobs.create(queued(job_id, user))
    await jobs.update(job_id, moved_to(job_pb2.JOB_STATE_DONE))
    await until_quiet(js)

    assert await notify_count(js) == 0


async def test_a_revision_handled_twice_still_makes_one_task(
    js: JetStreamContext, jobs: JobStore, callbacks: CallbackStore, user: str
) -> None:
    """As after a crash between the publish and the ack: the repeat is dropped by its id."""
    await callbacks.set(user, "https://hooks.example.com/cm")
    job_id = new_job_id()
    await jobs.create(done_job(job_id, user))
    sub = await js.pull_subscribe_bind(durable=JOB_ENDS.consumer, stream=JOB_ENDS.stream)
    [msg] = await sub.fetch(1, timeout=5)
    feed = JobEndFeed(js, JOB_ENDS, callbacks)

    first = await feed.announce(msg)
    second = await feed.announce(msg)

    assert first is not None and second is not None
    assert await notify_count(js) == 1
