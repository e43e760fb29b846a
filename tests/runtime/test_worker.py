"""The worker loop: exactly one of ack / nak / park per delivery, on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid

from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext

from meshkit.ids import new_job_id
from meshkit.publish import publish_task
from meshkit.topology import (
    DEADLETTER,
    MERGE,
    WorkStream,
    consumer_config,
    work_stream_config,
)
from meshkit.worker import Delivery, PermanentError, RetryLater, Worker, watch_max_deliveries


async def make_stream(js: JetStreamContext, **overrides: object) -> WorkStream:
    """A private copy of the MERGE stream with short timings, so retries take milliseconds."""
    name = f"T{uuid.uuid4().hex[:8].upper()}"
    settings: dict[str, object] = {"ack_wait_s": 1.0, "backoff_s": (0.1, 0.1), "max_deliver": 3}
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


async def run_until(worker: Worker, condition, limit_s: float = 10.0) -> None:
    """Run the worker until condition() holds (polled: the worker has no event to wait on)."""
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop, grace_s=2))
    deadline = asyncio.get_running_loop().time() + limit_s
    try:
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, "condition never held"
            await asyncio.sleep(0.02)
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


async def test_success_is_acked_once(js: JetStreamContext) -> None:
    ws = await make_stream(js)
    seen: list[int] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(d.attempt)

    t = task()
    await publish_task(js, ws.subject, t, msg_id=t.meta.task_id)
    ack = await publish_task(js, ws.subject, t, msg_id=t.meta.task_id)
    assert ack.duplicate  # same Nats-Msg-Id: dropped by the duplicate window
    worker = Worker(js, ws, merge_tasks.MergeTask, handler)
    await run_until(worker, lambda: worker.handled == 1)
    await asyncio.sleep(0.3)
    assert seen == [1] and await pending(js, ws) == 0


async def test_failure_is_retried_then_succeeds(js: JetStreamContext) -> None:
    ws = await make_stream(js)
    seen: list[int] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(d.attempt)
        if d.attempt < 3:
            raise RuntimeError("flaky")

    await publish_task(js, ws.subject, task(), msg_id="a")
    worker = Worker(js, ws, merge_tasks.MergeTask, handler)
    await run_until(worker, lambda: worker.handled == 1)
    assert seen == [1, 2, 3]
    assert await dead_letters(js, ws) == []


async def test_last_failure_is_parked_with_its_reason_and_the_hook_runs(
    js: JetStreamContext,
) -> None:
    ws = await make_stream(js)
    hooked: list[tuple[str, str]] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        raise RuntimeError(f"broken on delivery {d.attempt}")

    async def hook(t: merge_tasks.MergeTask | None, reason: str) -> None:
        hooked.append((t.meta.job_id if t else "", reason))

    t = task()
    await publish_task(js, ws.subject, t, msg_id="b")
    worker = Worker(js, ws, merge_tasks.MergeTask, handler, on_dead_letter=hook)
    await run_until(worker, lambda: bool(hooked))
    letters = await dead_letters(js, ws)
    assert len(letters) == 1
    assert letters[0].deliveries == 3 and letters[0].job_id == t.meta.job_id
    assert "broken on delivery 3" in letters[0].reason and letters[0].msg_id == "b"
    assert hooked == [(t.meta.job_id, "RuntimeError: broken on delivery 3")]
    assert await pending(js, ws) == 0  # termed, not left in the work stream


async def test_permanent_errors_and_invalid_payloads_are_parked_at_once(
    js: JetStreamContext,
) -> None:
    ws = await make_stream(js)
    calls = 0

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("no such user")

    await publish_task(js, ws.subject, task(), msg_id="c")
    bad = merge_tasks.MergeTask(
        meta=task_pb2.TaskMeta(job_id="not-a-job-id", task_id="x"), user="alice"
    )
    await publish_task(js, ws.subject, bad, msg_id="d")
    await js.publish(ws.subject, b"\xff\xff garbage", headers={"Nats-Msg-Id": "e"})
    worker = Worker(js, ws, merge_tasks.MergeTask, handler)
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(1.5)
    stop.set()
    await runner
    letters = {letter.msg_id: letter for letter in await dead_letters(js, ws)}
    assert calls == 1
    assert letters["c"].deliveries == 1 and "no such user" in letters["c"].reason
    assert "job_id" in letters["d"].reason and "Crockford" in letters["d"].reason
    assert "undecodable" in letters["e"].reason
    assert await pending(js, ws) == 0


async def test_retry_later_is_not_a_failure(js: JetStreamContext) -> None:
    ws = await make_stream(js, max_deliver=2, backoff_s=(0.1,))
    seen: list[int] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(d.attempt)
        if len(seen) == 1:
            raise RetryLater(0.05, "not yet")

    await publish_task(js, ws.subject, task(), msg_id="f")
    worker = Worker(js, ws, merge_tasks.MergeTask, handler)
    await run_until(worker, lambda: worker.handled == 1)
    assert seen == [1, 2]


async def test_long_work_is_kept_alive_by_in_progress(js: JetStreamContext) -> None:
    ws = await make_stream(js)  # ack wait 1 s; the handler takes 2.5 s
    seen: list[int] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(d.attempt)
        await asyncio.sleep(2.5)

    await publish_task(js, ws.subject, task(), msg_id="g")
    worker = Worker(js, ws, merge_tasks.MergeTask, handler, concurrency=2)
    await run_until(worker, lambda: worker.handled == 1)
    assert seen == [1]  # never redelivered mid-run


async def test_a_task_whose_worker_always_crashes_is_parked_by_the_advisory(
    js: JetStreamContext, nats_server
) -> None:
    """Nobody acks or naks: the server gives up after max_deliver and announces it."""
    ws = await make_stream(js, ack_wait_s=0.3, backoff_s=(0.2, 0.2))
    hooked: list[str] = []

    async def hook(t: merge_tasks.MergeTask | None, reason: str) -> None:
        hooked.append(reason)

    from meshkit.config import NatsSettings
    from meshkit.nats_client import connect

    nc, js2 = await connect(NatsSettings(url=nats_server.url), name="advisory")
    stop_watch = await watch_max_deliveries(nc, js2, ws, merge_tasks.MergeTask, hook)
    await publish_task(js, ws.subject, task(), msg_id="h")
    sub = await js.pull_subscribe_bind(durable=ws.consumer, stream=ws.stream)
    delivered = 0
    async with asyncio.timeout(15):
        while not hooked:  # a "worker" that takes the task and dies without a word, each time
            with contextlib.suppress(Exception):
                delivered += len(await sub.fetch(1, timeout=0.5))
    await sub.unsubscribe()
    await stop_watch()
    await nc.drain()
    assert delivered == 3 and "without an acknowledgement" in hooked[0]
    letters = await dead_letters(js, ws)
    assert [letter.msg_id for letter in letters] == ["h"]
    assert await pending(js, ws) == 0
