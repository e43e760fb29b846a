"""A Worker runs a TaskHandler object: its task type, its handling, its dead-letter consequence."""

from __future__ import annotations

import asyncio
import contextlib

from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from nats.aio.client import Client
from nats.js import JetStreamContext

from meshkit.domain.ids import new_job_id
from meshkit.publish import publish_task
from meshkit.worker import Delivery, Failure, PermanentError, Worker
from tests.runtime.worker_support import (
    RecordingHandler,
    dead_letters,
    make_stream,
    pending,
    recorded,
    run_until,
)


class DiscoverRecorder:
    """A handler of another task type: it keeps what it was given, then refuses it."""

    task_type = sync_tasks.DiscoverTask

    def __init__(self) -> None:
        self.handled: list[sync_tasks.DiscoverTask] = []
        self.parked: list[tuple[sync_tasks.DiscoverTask | None, Failure]] = []

    async def handle(self, task: sync_tasks.DiscoverTask, delivery: Delivery) -> None:
        self.handled.append(task)
        raise PermanentError(f"{task.user} is not wanted", code=7)

    async def on_dead_letter(self, task: sync_tasks.DiscoverTask | None, failure: Failure) -> None:
        self.parked.append((task, failure))


async def test_deliveries_are_decoded_as_the_handlers_task_type(
    nc: Client, js: JetStreamContext
) -> None:
    ws = await make_stream(js)
    job_id = new_job_id()
    sent = sync_tasks.DiscoverTask(
        meta=task_pb2.TaskMeta(job_id=job_id, task_id=f"discover:{job_id}"),
        user="octo",
        force=True,
        resync=["octo/one"],
    )
    await recorded(js, job_id)  # the job exists, as when gateway publishes discovery
    await publish_task(js, ws.subject, sent, msg_id=sent.meta.task_id)
    handler = DiscoverRecorder()
    await run_until(Worker(nc, js, ws, handler), lambda: bool(handler.parked))
    assert handler.handled == [sent]
    # The same decoded task reaches the handler's dead-letter consequence, with the
    # PermanentError's message and code for the job.
    assert handler.parked == [
        (sent, Failure("octo is not wanted", public="octo is not wanted", code=7))
    ]
    [letter] = await dead_letters(js, ws)
    assert letter.job_id == job_id and letter.deliveries == 1


async def test_a_running_worker_parks_a_task_that_crashed_every_delivery_through_its_handler(
    nc: Client, js: JetStreamContext
) -> None:
    """The MAX_DELIVERIES watcher is the Worker's own: a service that runs a worker gets its
    crashed tasks parked and its handler told, with nothing more to wire."""
    ws = await make_stream(js, ack_wait_s=0.3, retry_backoff_s=(0.2, 0.2), deadline_s=30.0)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold(t: object, d: Delivery) -> None:
        holding.set()
        await release.wait()  # keeps the worker's one slot busy, so it fetches nothing else

    handler = RecordingHandler(hold)
    worker = Worker(nc, js, ws, handler, concurrency=1)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop, grace_s=2))
    try:
        await publish_task(js, ws.subject, await recorded(js), msg_id="held")
        await asyncio.wait_for(holding.wait(), 10)
        crashed = await recorded(js)
        await publish_task(js, ws.subject, crashed, msg_id="crashed")
        sub = await js.pull_subscribe_bind(durable=ws.consumer, stream=ws.stream)
        try:
            async with asyncio.timeout(15):
                # Another "worker" takes the task and dies without a word, each time.
                while not handler.parked:
                    with contextlib.suppress(Exception):
                        await sub.fetch(1, timeout=0.5)
        finally:
            await sub.unsubscribe()
    finally:
        release.set()
        stop.set()
        await running
    assert worker.handled == 1  # the held task, finished within the grace
    [(job_id, failure)] = handler.parked
    assert job_id == crashed.meta.job_id and "without an acknowledgement" in failure.reason
    assert failure.public is None
    assert [letter.msg_id for letter in await dead_letters(js, ws)] == ["crashed"]
    assert await pending(js, ws) == 0
