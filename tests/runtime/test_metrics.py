"""The instrumentation points an operator's dashboards and alerts rely on, read back from
prometheus-client's registry: each test uses series of its own (a private stream) or
compares before and after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.merge.v1 import tasks_pb2 as merge_tasks
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from meshctl.nats_server import NatsServer
from meshkit import metrics, worker
from meshkit.blob import open_blob_store
from meshkit.capacity import CapacityWatch
from meshkit.config import NatsSettings
from meshkit.domain.ids import new_job_id
from meshkit.jobs import JobStore
from meshkit.nats_client import connect
from meshkit.publish import publish_task
from meshkit.rpc import create_server
from meshkit.worker import Delivery, PermanentError, RetryLater, Worker, park
from tests.runtime.worker_support import RecordingHandler, make_stream, recorded, run_until

JobState = job_pb2.JobState

# Every metric's name (counters without their _total) and labels: bounded enumerations only,
# never a user, a job id, a repository, a token or a URL.
CONTRACT = {
    "contextmesh_rpc_requests": ("method", "code"),
    "contextmesh_rpc_duration_seconds": ("method",),
    "contextmesh_tasks": ("stream", "outcome"),
    "contextmesh_task_duration_seconds": ("stream",),
    "contextmesh_task_deliveries": ("stream",),
    "contextmesh_task_redeliveries": ("stream",),
    "contextmesh_dead_letters": ("stream",),
    "contextmesh_consumer_pending_messages": ("stream", "consumer"),
    "contextmesh_consumer_ack_pending_messages": ("stream", "consumer"),
    "contextmesh_stream_messages": ("stream",),
    "contextmesh_stream_bytes": ("stream",),
    "contextmesh_jobs_started": (),
    "contextmesh_jobs_coalesced": (),
    "contextmesh_jobs_finished": ("state",),
    "contextmesh_job_duration_seconds": ("state",),
    "contextmesh_jobs_running": (),
    "contextmesh_job_oldest_running_age_seconds": (),
    "contextmesh_github_requests": ("status",),
    "contextmesh_github_rate_limit_remaining": (),
    "contextmesh_blob_bytes": ("backend", "direction"),
    "contextmesh_blob_operation_duration_seconds": ("backend", "operation"),
    "contextmesh_training_runs": ("outcome",),
    "contextmesh_training_duration_seconds": (),
    "contextmesh_training_mrr": ("model",),
    "contextmesh_search_duration_seconds": (),
}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_worker_counts_each_delivery_under_its_outcome(
    nc: Client, js: JetStreamContext
) -> None:
    ws = await make_stream(js)
    kinds = {new_job_id(): kind for kind in ("fine", "flaky", "busy", "broken")}

    async def handle(t: merge_tasks.MergeTask, d: Delivery) -> None:
        kind = kinds[t.meta.job_id]
        if kind == "flaky" and d.attempt == 1:
            raise RuntimeError("flaky")
        if kind == "busy" and d.attempt == 1:
            raise RetryLater(0.1)
        if kind == "broken":
            raise PermanentError("never")

    handler = RecordingHandler(handle)
    for job_id in kinds:
        t = await recorded(js, job_id)
        await publish_task(js, ws.subject, t, msg_id=t.meta.task_id)
    await js.publish(ws.subject, b"\xff not a task", headers={"Nats-Msg-Id": "garbage"})
    w = Worker(nc, js, ws, handler)
    await run_until(w, lambda: w.handled == 3 and len(handler.parked) == 2)

    outcomes = {
        o.value: value("contextmesh_tasks_total", stream=ws.stream, outcome=o)
        for o in metrics.TaskOutcome
    }
    assert outcomes == {"ack": 3, "retry": 1, "deferred": 1, "parked": 2}
    assert value("contextmesh_task_deliveries_total", stream=ws.stream) == 7
    assert value("contextmesh_task_redeliveries_total", stream=ws.stream) == 2
    assert value("contextmesh_dead_letters_total", stream=ws.stream) == 2
    assert value("contextmesh_task_duration_seconds_count", stream=ws.stream) == 7


async def test_a_task_parked_by_every_replica_counts_as_one_dead_letter(
    js: JetStreamContext,
) -> None:
    ws = await make_stream(js)
    for _ in range(3):  # each replica's advisory watcher parks the same stream sequence
        await park(
            js, ws, payload=b"x", stream_seq=7, msg_id="m", job_id="", reason="r", deliveries=5
        )
    assert value("contextmesh_dead_letters_total", stream=ws.stream) == 1


async def test_a_worker_exports_its_consumers_backlog_from_the_server(
    nc: Client, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "LAG_POLL_S", 0.05)
    ws = await make_stream(js)
    release = asyncio.Event()

    async def handle(t: merge_tasks.MergeTask, d: Delivery) -> None:
        await release.wait()

    for _ in range(3):
        t = await recorded(js)
        await publish_task(js, ws.subject, t, msg_id=t.meta.task_id)
    w = Worker(nc, js, ws, RecordingHandler(handle), concurrency=1)

    def backlog() -> tuple[float, float]:
        return (
            value("contextmesh_consumer_pending_messages", stream=ws.stream, consumer=ws.consumer),
            value(
                "contextmesh_consumer_ack_pending_messages", stream=ws.stream, consumer=ws.consumer
            ),
        )

    stop = asyncio.Event()
    running = asyncio.create_task(w.run(stop, grace_s=1))
    try:
        for _ in range(200):
            if backlog() == (2, 1):
                break
            await asyncio.sleep(0.02)
        assert backlog() == (2, 1)
    finally:
        release.set()
        stop.set()
        await running


async def test_a_job_counts_as_finished_once_when_writers_race_to_end_it(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    other_nc, other_js = await connect(NatsSettings(url=nats_server.url), name="other")
    try:
        stores = [await JobStore.open(js), await JobStore.open(other_js)]
        before = {
            s: value("contextmesh_jobs_finished_total", state=s) for s in ("FAILED", "CANCELLED")
        }
        timed_before = value("contextmesh_job_duration_seconds_count", state="FAILED") + value(
            "contextmesh_job_duration_seconds_count", state="CANCELLED"
        )
        jobs = 10
        for _ in range(jobs):
            record = job_record_pb2.JobRecord()
            record.job.id, record.job.state = new_job_id(), JobState.JOB_STATE_SYNCING
            record.job.create_time.GetCurrentTime()
            await stores[0].create(record)
            await asyncio.gather(
                *(
                    store.end(record.job.id, state, "ended", code=0)
                    for store in stores
                    for state in (JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED)
                )
            )
            # A later write to the ended job is no second ending.
            await stores[1].update(record.job.id, lambda r: setattr(r.job, "error", "x") or True)
        after = {s: value("contextmesh_jobs_finished_total", state=s) for s in before}
        assert sum(after[s] - before[s] for s in before) == jobs
        timed_after = value("contextmesh_job_duration_seconds_count", state="FAILED") + value(
            "contextmesh_job_duration_seconds_count", state="CANCELLED"
        )
        assert timed_after - timed_before == jobs
    finally:
        await other_nc.drain()


async def test_rpcs_count_by_method_and_final_code_and_unknown_methods_make_no_series() -> None:
    server = create_server("127.0.0.1:0", [], auth=None, validate=False, trace=False)
    await server.server.start()
    method = "/grpc.health.v1.Health/Check"
    before = {
        c: value("contextmesh_rpc_requests_total", method=method, code=c)
        for c in ("OK", "NOT_FOUND")
    }
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest())
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            unknown = channel.unary_unary("/x.Made/Up-by-a-client")
            with pytest.raises(grpc.aio.AioRpcError):
                await unknown(b"")
    finally:
        await server.server.stop(0)
    assert value("contextmesh_rpc_requests_total", method=method, code="OK") - before["OK"] == 1
    assert (
        value("contextmesh_rpc_requests_total", method=method, code="NOT_FOUND")
        - before["NOT_FOUND"]
        == 1
    )
    methods = {
        s.labels["method"]
        for m in REGISTRY.collect()
        if m.name == "contextmesh_rpc_requests"
        for s in m.samples
    }
    assert not any("Made" in name for name in methods)


async def test_the_capacity_watch_exports_each_streams_messages_and_bytes(
    js: JetStreamContext,
) -> None:
    ws = await make_stream(js)
    for _ in range(2):
        t = await recorded(js)
        await publish_task(js, ws.subject, t, msg_id=t.meta.task_id)
    await CapacityWatch(js, [ws.stream]).check()
    assert value("contextmesh_stream_messages", stream=ws.stream) == 2
    assert value("contextmesh_stream_bytes", stream=ws.stream) > 0


async def test_blob_stores_count_bytes_both_ways_and_time_each_operation(tmp_path: Path) -> None:
    store = open_blob_store((tmp_path / "blobs").as_uri())
    written = value("contextmesh_blob_bytes_total", backend="file", direction="write")
    read = value("contextmesh_blob_bytes_total", backend="file", direction="read")
    gets = value(
        "contextmesh_blob_operation_duration_seconds_count", backend="file", operation="get"
    )
    try:
        await store.put("a/one", b"x" * 1000)
        await store.create("a/two", b"y" * 24)
        assert await store.get("a/one") == b"x" * 1000
        assert b"".join([chunk async for chunk in store.open_read("a/two")]) == b"y" * 24
    finally:
        await store.close()
    assert (
        value("contextmesh_blob_bytes_total", backend="file", direction="write") - written == 1024
    )
    assert value("contextmesh_blob_bytes_total", backend="file", direction="read") - read == 1024
    assert (
        value("contextmesh_blob_operation_duration_seconds_count", backend="file", operation="get")
        - gets
        == 1
    )


def test_the_metrics_are_the_contracts_names_with_bounded_labels_only() -> None:
    """Dashboards and alert rules query these names and labels: a rename breaks them, and a
    label holding a user or job id would grow a series per user."""
    defined = {
        metric._name: metric._labelnames  # prometheus-client keeps them only there
        for metric in vars(metrics).values()
        if isinstance(metric, Counter | Gauge | Histogram)
    }
    assert defined == CONTRACT
