"""What the worker leaves for operators, on a real nats-server: a dead letter of bounded size
whatever the error, a traceback in the log for a failure (none for a deadline), and each
delivery's own handling time.

Written against mutants tools/mutation.py found surviving in meshkit/worker.py
(docs/testing.md).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from meshkit.jobs import JobStore
from meshkit.publish import publish_task
from meshkit.worker import Delivery, Worker, park
from tests.runtime.worker_support import (
    RecordingHandler,
    dead_letters,
    make_stream,
    recorded,
    run_until,
    task,
)


async def test_a_reason_of_any_length_is_parked_cut_to_its_first_2000_characters(
    js: JetStreamContext,
) -> None:
    ws = await make_stream(js)
    # Over the server's 1 MiB message limit, and every position of it tells where it was cut.
    reason = "".join(f"{n:07d}" for n in range(200_000))

    await park(
        js, ws, payload=b"x", stream_seq=1, msg_id="m", job_id="", reason=reason, deliveries=3
    )

    [letter] = await dead_letters(js, ws)
    assert letter.reason == reason[:2000]


async def test_parking_for_a_gone_job_answers_0_and_keeps_nothing(js: JetStreamContext) -> None:
    ws = await make_stream(js)
    kept = await recorded(js)
    await JobStore.open(js)  # the job bucket exists; the second job has no record in it

    gone = await park(
        js,
        ws,
        payload=b"x",
        stream_seq=1,
        msg_id="a",
        job_id=task().meta.job_id,
        reason="r",
        deliveries=3,
    )
    live = await park(
        js,
        ws,
        payload=b"y",
        stream_seq=2,
        msg_id="b",
        job_id=kept.meta.job_id,
        reason="r",
        deliveries=3,
    )

    assert gone == 0, "0 says no letter was kept"
    [letter] = await dead_letters(js, ws)
    assert live > 0 and letter.msg_id == "b"


async def test_a_failure_is_logged_with_its_traceback_and_a_deadline_without(
    nc: Client, js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    ws = await make_stream(js, deadline_s=0.3, retry_backoff_s=(0.1, 0.1))

    async def fail_then_hang(t: merge_tasks.MergeTask, d: Delivery) -> None:
        if d.attempt == 1:
            raise RuntimeError("the blob store was down")
        if d.attempt == 2:
            await asyncio.Event().wait()  # past the deadline

    await publish_task(js, ws.subject, task(), msg_id="logged")
    worker = Worker(nc, js, ws, RecordingHandler(fail_then_hang))
    with caplog.at_level(logging.WARNING, logger="meshkit.worker"):
        await run_until(worker, lambda: worker.handled == 1)

    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2
    failed, timed_out = retries
    assert failed.exc_info is not None and isinstance(failed.exc_info[1], RuntimeError)
    assert timed_out.exc_info is None and "deadline" in timed_out.getMessage()


async def test_each_delivery_is_timed_from_its_own_start(nc: Client, js: JetStreamContext) -> None:
    ws = await make_stream(js)

    async def work(t: merge_tasks.MergeTask, d: Delivery) -> None:
        await asyncio.sleep(0.2)

    await publish_task(js, ws.subject, task(), msg_id="timed")
    worker = Worker(nc, js, ws, RecordingHandler(work))
    started = time.perf_counter()
    await run_until(worker, lambda: worker.handled == 1)
    elapsed = time.perf_counter() - started

    seconds = REGISTRY.get_sample_value(
        "contextmesh_task_duration_seconds_sum", {"stream": ws.stream}
    )
    assert seconds is not None and 0.2 <= seconds <= elapsed
