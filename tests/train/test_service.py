"""trainsvc's worker loop in-process on a nats-server of the test's own, with short retries:
a task flows TRAIN -> TRAINING -> DONE, and a task that always fails is parked in
DEADLETTER while the bundle stays ready."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2
from contextmesh.task.v1 import task_pb2

from meshctl.nats_server import NatsServer
from meshkit.blob import BlobStore, FilesystemBlobStore
from meshkit.config import NatsSettings, Settings, StreamTiming, TrainSettings
from meshkit.domain.pointers import read_model_pointer
from meshkit.jobs import JobStore
from meshkit.nats_client import connect
from meshkit.publish import publish_task
from meshkit.service import ServiceContext
from meshkit.topology import DEADLETTER, TRAIN, Buckets, declare
from searchsvc.cache import ByteLRU
from searchsvc.engine import Searcher
from tests.gateway.conftest import open_gateway
from tests.train.support import gate_decision, prepare_job, sample_bundle
from trainsvc.service import serve

JobState = job_pb2.JobState
TS = job_pb2.TrainingState


@dataclass
class Running:
    ctx: ServiceContext
    blobs: BlobStore
    jobs: JobStore
    task: asyncio.Task[None]


@pytest.fixture
async def trainsvc(
    fresh_nats: NatsServer, tmp_path: Path, tiny_model_dir: Path
) -> AsyncIterator[Running]:
    nc, js = await connect(NatsSettings(url=fresh_nats.url), name="trainsvc-test")
    settings = Settings(
        blob_url=(tmp_path / "blobs").as_uri(),
        train=TrainSettings(model_path=str(tiny_model_dir), batch_size=8),
        timing={"TRAIN": StreamTiming(ack_wait_s=2, retry_backoff_s=(1, 1))},
    )
    await declare(js, timing=settings.timing)
    ctx = ServiceContext("trainsvc", settings, nc, js)
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    running = Running(ctx, blobs, await JobStore.open(js), asyncio.create_task(serve(ctx)))
    yield running
    ctx.stop.set()
    await asyncio.wait_for(running.task, 15)
    await blobs.close()
    await nc.drain()


async def final_job(jobs: JobStore, job_id: str) -> job_pb2.Job:
    """The job's last state, once it is final (the watch ends there)."""
    final = job_pb2.Job()
    async with asyncio.timeout(30):
        async for job in jobs.watch(job_id):
            final = job
    return final


async def test_a_published_task_trains_and_its_model_serves_search(
    trainsvc: Running, tiny_model_dir: Path, user: str
) -> None:
    js: Any = trainsvc.ctx.js
    job_id, ref, task = await prepare_job(js, trainsvc.jobs, trainsvc.blobs, sample_bundle(user))
    await publish_task(js, TRAIN.subject, task, msg_id=task.meta.task_id)
    job = await final_job(trainsvc.jobs, job_id)
    assert job.state == JobState.JOB_STATE_DONE
    assert job.training.state == gate_decision(job)
    assert job.training.attempt == 1 and job.training.total_steps > 0

    searcher = Searcher(
        bundles=await js.key_value(Buckets.BUNDLES.name),
        models=await js.key_value(Buckets.MODELS.name),
        blobs=trainsvc.blobs,
        base_model=str(tiny_model_dir),
        cache=ByteLRU(64 * 1024 * 1024),
    )
    try:
        result = await searcher.search(user, "Zig", 3)
    finally:
        searcher.close()
    assert result.bundle_hash == ref.content_hash
    assert result.tuned == (job.training.state == TS.TRAINING_STATE_PUBLISHED)
    assert result.hits[0].repository == f"{user}/zig-tracer"


async def test_a_task_that_always_fails_is_dead_lettered_and_the_bundle_stays(
    trainsvc: Running, user: str
) -> None:
    js: Any = trainsvc.ctx.js
    job_id, ref, task = await prepare_job(js, trainsvc.jobs, trainsvc.blobs, sample_bundle(user))
    bundles = await js.key_value(Buckets.BUNDLES.name)
    pointer_before = (await bundles.get(user)).value
    task.bundle_key = f"bundles/{user}/missing.json"  # every attempt fails to read it
    await publish_task(js, TRAIN.subject, task, msg_id=task.meta.task_id)

    job = await final_job(trainsvc.jobs, job_id)
    assert job.state == JobState.JOB_STATE_DONE
    assert job.training.state == TS.TRAINING_STATE_FAILED
    assert "last attempt" in job.training.reason and "missing.json" not in job.training.reason
    assert job.training.attempt == 3
    assert job.bundle == ref
    assert (await bundles.get(user)).value == pointer_before
    assert await trainsvc.blobs.exists(ref.blob_key)

    parked = await js.get_last_msg(DEADLETTER, "contextmesh.deadletter.TRAIN")
    letter = task_pb2.DeadLetter()
    letter.ParseFromString(parked.data)
    assert letter.job_id == job_id and letter.deliveries == 3
    assert "missing.json" in letter.reason
    assert (await js.stream_info(TRAIN.stream)).state.messages == 0
    assert bundle_pb2.BundlePointer.FromString(pointer_before).bundle == ref


async def test_a_parked_training_redriven_trains_that_bundle_once(
    trainsvc: Running, user: str
) -> None:
    js: Any = trainsvc.ctx.js
    job_id, ref, task = await prepare_job(js, trainsvc.jobs, trainsvc.blobs, sample_bundle(user))
    stored_at = task.bundle_key
    task.bundle_key = f"bundles/{user}/moved.json"  # every attempt fails to read it
    await publish_task(js, TRAIN.subject, task, msg_id=task.meta.task_id)
    failed = await final_job(trainsvc.jobs, job_id)
    assert failed.training.state == TS.TRAINING_STATE_FAILED
    parked = await js.get_last_msg(DEADLETTER, "contextmesh.deadletter.TRAIN")

    # The fault is fixed: the bundle is where the task says it is.
    await trainsvc.blobs.put(task.bundle_key, await trainsvc.blobs.get(stored_at))
    gateway = await open_gateway(js, trainsvc.blobs)
    redriven = await gateway.redriver.redrive(parked.seq)
    assert redriven.job.redrive.job_id == job_id and redriven.job.id != job_id

    job = await final_job(trainsvc.jobs, redriven.job.id)
    assert job.state == JobState.JOB_STATE_DONE
    assert job.training.state == gate_decision(job)
    pointer, _ = await read_model_pointer(await js.key_value(Buckets.MODELS.name), user)
    assert pointer is not None and pointer.bundle_hash == ref.content_hash
    assert pointer.model_key == job.training.model_key

    again = await gateway.redriver.redrive(parked.seq)
    assert again.job.id == job.id
    assert (await trainsvc.jobs.get(job.id))[0].job == job  # nothing trained it twice
    assert (await js.stream_info(TRAIN.stream)).state.messages == 0
