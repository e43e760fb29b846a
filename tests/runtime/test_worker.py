"""The worker loop: exactly one of ack / nak / park per delivery, on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time

from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from contextmesh.task.v1 import task_pb2
from nats.aio.client import Client
from nats.js import JetStreamContext

from meshkit.erasure import purge
from meshkit.jobs import JobStore
from meshkit.publish import publish_task
from meshkit.topology import DISCOVER, MERGE, SYNC, Buckets
from meshkit.worker import (
    Delivery,
    Failure,
    PermanentError,
    RetryLater,
    Worker,
    watch_max_deliveries,
)
from tests.runtime.worker_support import (
    RecordingHandler,
    dead_letters,
    drained,
    make_stream,
    pending,
    recorded,
    run_until,
    task,
)
from tests.support.polling import until


async def test_success_is_acked_once(nc: Client, js: JetStreamContext) -> None:
    ws = await make_stream(js)
    seen: list[int] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(d.attempt)

    t = await recorded(js)
    await publish_task(js, ws.subject, t, msg_id=t.meta.task_id)
    ack = await publish_task(js, ws.subject, t, msg_id=t.meta.task_id)
    assert ack.duplicate  # same Nats-Msg-Id: dropped by the duplicate window
    worker = Worker(nc, js, ws, RecordingHandler(handler))
    await run_until(worker, lambda: worker.handled == 1)
    # The ack removes the task from the work queue: once it is gone, nothing can come back.
    await until(lambda: drained(js, ws), what="the ack to empty the stream")
    assert seen == [1]


async def test_failure_is_retried_then_succeeds(nc: Client, js: JetStreamContext) -> None:
    ws = await make_stream(js)
    seen: list[int] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(d.attempt)
        if d.attempt < 3:
            raise RuntimeError("flaky")

    await publish_task(js, ws.subject, await recorded(js), msg_id="a")
    worker = Worker(nc, js, ws, RecordingHandler(handler))
    await run_until(worker, lambda: worker.handled == 1)
    assert seen == [1, 2, 3]
    assert await dead_letters(js, ws) == []


async def test_last_failure_is_parked_with_its_reason_and_the_handler_is_told(
    nc: Client,
    js: JetStreamContext,
) -> None:
    ws = await make_stream(js)

    async def broken(t: merge_tasks.MergeTask, d: Delivery) -> None:
        raise RuntimeError(f"broken on delivery {d.attempt}")

    t = await recorded(js)
    await publish_task(js, ws.subject, t, msg_id="b")
    handler = RecordingHandler(broken)
    worker = Worker(nc, js, ws, handler)
    await run_until(worker, lambda: bool(handler.parked))
    letters = await dead_letters(js, ws)
    assert len(letters) == 1
    assert letters[0].deliveries == 3 and letters[0].job_id == t.meta.job_id
    assert "broken on delivery 3" in letters[0].reason and letters[0].msg_id == "b"
    # The reason is for operators; nothing of an internal error is for the caller.
    assert handler.parked == [(t.meta.job_id, Failure("RuntimeError: broken on delivery 3"))]
    assert await pending(js, ws) == 0  # termed, not left in the work stream


async def test_permanent_errors_and_invalid_payloads_are_parked_at_once(
    nc: Client,
    js: JetStreamContext,
) -> None:
    ws = await make_stream(js)
    calls = 0

    async def refuse(t: merge_tasks.MergeTask, d: Delivery) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("no such user", code=1)

    await publish_task(js, ws.subject, await recorded(js), msg_id="c")
    bad = merge_tasks.MergeTask(
        meta=task_pb2.TaskMeta(job_id="not-a-job-id", task_id="x"), user="alice"
    )
    await publish_task(js, ws.subject, bad, msg_id="d")
    await js.publish(ws.subject, b"\xff\xff garbage", headers={"Nats-Msg-Id": "e"})
    handler = RecordingHandler(refuse)
    worker = Worker(nc, js, ws, handler)
    await run_until(worker, lambda: len(handler.parked) == 3)
    letters = {letter.msg_id: letter for letter in await dead_letters(js, ws)}
    assert calls == 1
    # A PermanentError's message is written for the caller and carries the job's code.
    failures = [failure for _, failure in handler.parked]
    assert Failure("no such user", public="no such user", code=1) in failures
    assert letters["c"].deliveries == 1 and "no such user" in letters["c"].reason
    assert "job_id" in letters["d"].reason and "Crockford" in letters["d"].reason
    assert "undecodable" in letters["e"].reason
    assert await pending(js, ws) == 0


async def test_retry_later_is_not_a_failure(nc: Client, js: JetStreamContext) -> None:
    ws = await make_stream(js, retry_backoff_s=(0.1,))
    seen: list[int] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(d.attempt)
        if len(seen) == 1:
            raise RetryLater(0.05, "not yet")

    await publish_task(js, ws.subject, await recorded(js), msg_id="f")
    worker = Worker(nc, js, ws, RecordingHandler(handler))
    await run_until(worker, lambda: worker.handled == 1)
    assert seen == [1, 2]


async def test_long_work_is_kept_alive_by_in_progress(nc: Client, js: JetStreamContext) -> None:
    ws = await make_stream(js)  # ack wait 1 s; the handler takes 2.5 s
    seen: list[int] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(d.attempt)
        await asyncio.sleep(2.5)  # the point: work that outlasts the ack wait

    await publish_task(js, ws.subject, await recorded(js), msg_id="g")
    worker = Worker(nc, js, ws, RecordingHandler(handler), concurrency=2)
    await run_until(worker, lambda: worker.handled == 1)
    assert seen == [1]  # never redelivered mid-run


async def test_a_limit_that_moves_is_followed(nc: Client, js: JetStreamContext) -> None:
    """syncsvc's limit follows the replicas alive: fewer run when it drops, more at once
    when it grows, without a task having to end first."""
    ws = await make_stream(js, ack_wait_s=5.0)
    running: set[str] = set()
    most = 0
    release = asyncio.Event()

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        nonlocal most
        running.add(t.meta.job_id)
        most = max(most, len(running))
        await release.wait()
        running.discard(t.meta.job_id)

    for n in range(8):
        await publish_task(js, ws.subject, await recorded(js), msg_id=f"limit-{n}")
    limit = [2]
    worker = Worker(nc, js, ws, RecordingHandler(handler), concurrency=lambda: limit[0])
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: len(running) == 2, what="two tasks running")
        await asyncio.sleep(1.5)  # fetches at the limit would have taken more by now
        assert most == 2
        limit[0] = 5
        await until(lambda: len(running) == 5, what="five running once the limit grew")
        assert most == 5
        release.set()
        await until(lambda: worker.handled == 8, what="every task handled")
    finally:
        release.set()
        stop.set()
        await run


async def test_a_task_whose_worker_always_crashes_is_parked_by_the_advisory(
    js: JetStreamContext, nats_server
) -> None:
    """Nobody acks or naks: the server gives up after max_deliver and announces it."""
    ws = await make_stream(js, ack_wait_s=0.3, retry_backoff_s=(0.2, 0.2))
    handler = RecordingHandler()

    from meshkit.config import NatsSettings
    from meshkit.nats_client import connect

    nc, js2 = await connect(NatsSettings(url=nats_server.url), name="advisory")
    stop_watch = await watch_max_deliveries(nc, js2, ws, handler)
    t = await recorded(js)
    await publish_task(js, ws.subject, t, msg_id="h")
    sub = await js.pull_subscribe_bind(durable=ws.consumer, stream=ws.stream)
    delivered = 0
    async with asyncio.timeout(15):
        # A "worker" that takes the task and dies without a word, each time.
        while not handler.parked:
            with contextlib.suppress(Exception):
                delivered += len(await sub.fetch(1, timeout=0.5))
    await sub.unsubscribe()
    await stop_watch()
    await nc.drain()
    [(job_id, failure)] = handler.parked
    assert delivered == 3 and job_id == t.meta.job_id
    assert "without an acknowledgement" in failure.reason
    assert failure.public is None  # internal: no text of it may reach a job
    letters = await dead_letters(js, ws)
    assert [letter.msg_id for letter in letters] == ["h"]
    assert await pending(js, ws) == 0


async def test_a_handler_stuck_on_an_await_is_abandoned_at_its_deadline(
    nc: Client, js: JetStreamContext
) -> None:
    """Past the deadline the attempt is cancelled and counts as failed: retried, then parked;
    the one slot it held serves the next task meanwhile."""
    ws = await make_stream(js, deadline_s=0.3, retry_backoff_s=(0.1, 0.1))
    stuck: list[int] = []

    async def hang_if_stuck(t: merge_tasks.MergeTask, d: Delivery) -> None:
        if t.user == "stuck":
            stuck.append(d.attempt)
            await asyncio.Event().wait()  # never set

    hung = await recorded(js)
    hung.user = "stuck"
    await publish_task(js, ws.subject, hung, msg_id="stuck")
    await publish_task(js, ws.subject, await recorded(js), msg_id="fine")
    handler = RecordingHandler(hang_if_stuck)
    worker = Worker(nc, js, ws, handler, concurrency=1)
    await run_until(worker, lambda: bool(handler.parked) and worker.handled == 1)
    assert stuck == [1, 2, 3]
    [(_, failure)] = handler.parked
    assert "deadline of 0.3 s" in failure.reason and "CONTEXTMESH_" in failure.reason
    assert failure.public is None  # a deadline is internal: no text of it reaches a job
    [letter] = await dead_letters(js, ws)
    assert letter.msg_id == "stuck" and letter.deliveries == 3
    assert await pending(js, ws) == 0


async def test_a_handler_whose_thread_blocks_is_abandoned_at_its_deadline(
    nc: Client, js: JetStreamContext
) -> None:
    ws = await make_stream(js, deadline_s=0.3, retry_backoff_s=(0.1,))
    release = threading.Event()
    attempts: list[int] = []

    async def block(t: merge_tasks.MergeTask, d: Delivery) -> None:
        attempts.append(d.attempt)
        await asyncio.to_thread(release.wait)  # a thread that never returns on its own

    await publish_task(js, ws.subject, await recorded(js), msg_id="blocked")
    handler = RecordingHandler(block)
    worker = Worker(nc, js, ws, handler)
    try:
        await run_until(worker, lambda: bool(handler.parked))
    finally:
        release.set()  # let the abandoned threads end with the test
    [(_, failure)] = handler.parked
    assert attempts == [1, 2] and "deadline" in failure.reason
    assert failure.public is None  # a deadline is internal: no text of it reaches a job
    assert await pending(js, ws) == 0


async def test_retries_wait_the_documented_delays(nc: Client, js: JetStreamContext) -> None:
    """A failed attempt is retried after retry_backoff_s[n-1], measured on a real server
    with MERGE's own first two delays (1 s, then 5 s)."""
    table = MERGE.retry_backoff_s[:2]
    ws = await make_stream(js, retry_backoff_s=table)
    loop = asyncio.get_running_loop()
    seen: list[float] = []

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(loop.time())
        if len(seen) <= len(table):
            raise RuntimeError("not yet")

    await publish_task(js, ws.subject, await recorded(js), msg_id="timed")
    worker = Worker(nc, js, ws, RecordingHandler(handler))
    await run_until(worker, lambda: worker.handled == 1, limit_s=30)
    gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
    assert len(gaps) == len(table)
    # Never earlier than the table says; and the delay of this attempt, not of a later one
    # (MERGE's next delay is 15 s), whatever a busy machine adds.
    ceilings = (*MERGE.retry_backoff_s[1 : len(table) + 1],)
    for gap, expected, ceiling in zip(gaps, table, ceilings, strict=True):
        assert expected - 0.05 <= gap < ceiling, (gaps, table)


async def test_a_dead_workers_task_moves_on_after_the_ack_wait(js: JetStreamContext) -> None:
    """Measured on a real server with SYNC's own ack wait: the delay a crash costs."""
    ws = await make_stream(js, ack_wait_s=SYNC.ack_wait_s)
    await publish_task(js, ws.subject, await recorded(js), msg_id="orphan")
    sub = await js.pull_subscribe_bind(durable=ws.consumer, stream=ws.stream)
    try:
        [first] = await sub.fetch(1, timeout=5)  # taken by a worker that then dies silently
        taken = time.monotonic()
        [again] = await sub.fetch(1, timeout=ws.ack_wait_s + 5)
        waited = time.monotonic() - taken
        await again.ack()
    finally:
        await sub.unsubscribe()
    assert again.metadata.num_delivered == 2 and first.data == again.data
    # Not before the ack wait; and SYNC's ack wait, not the 10 s of the other streams (or the
    # 10 s of backoff[1] the server used to time it from).
    assert ws.ack_wait_s - 0.05 <= waited < DISCOVER.ack_wait_s


async def test_a_task_of_a_gone_job_is_dropped_not_retried_or_parked(
    nc: Client, js: JetStreamContext
) -> None:
    """A job forgotten or expired has nobody waiting for its work: keeping its task (or a
    letter of it) would keep what DeleteUser erased."""
    ws = await make_stream(js)
    seen: list[int] = []
    jobs = await JobStore.open(js)

    async def handler(t: merge_tasks.MergeTask, d: Delivery) -> None:
        seen.append(d.attempt)
        await jobs.get(t.meta.job_id)  # as every handler starts: the record is gone

    handler_ = RecordingHandler(handler)
    await publish_task(js, ws.subject, task(), msg_id="gone")
    worker = Worker(nc, js, ws, handler_)
    await run_until(worker, lambda: bool(seen))
    await until(lambda: drained(js, ws), what="the task acked away")
    assert seen == [1]
    assert await dead_letters(js, ws) == [] and handler_.parked == []


async def test_a_letter_of_a_job_forgotten_while_it_failed_is_not_kept(
    nc: Client, js: JetStreamContext
) -> None:
    ws = await make_stream(js)
    t = await recorded(js)

    async def broken(task_: merge_tasks.MergeTask, d: Delivery) -> None:
        if d.is_last:  # forgotten during its last attempt, which then fails
            await purge(js, Buckets.JOBS, task_.meta.job_id)
        raise RuntimeError("broken")

    handler = RecordingHandler(broken)
    await publish_task(js, ws.subject, t, msg_id="forgotten")
    await run_until(Worker(nc, js, ws, handler), lambda: bool(handler.parked))
    assert await dead_letters(js, ws) == []
