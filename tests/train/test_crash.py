"""`python -m trainsvc` SIGKILLed mid-training: the task is redelivered to the other replica
and the job still ends DONE; then `python -m searchsvc` serves the result over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from contextmesh.job.v1 import job_pb2
from contextmesh.search.v1 import search_service_pb2 as pb
from contextmesh.search.v1 import search_service_pb2_grpc

from meshctl.nats_server import NatsServer
from meshkit.bearer import aio_bearer_channel
from meshkit.blob import FilesystemBlobStore
from meshkit.config import NatsSettings, Settings
from meshkit.jobs import JobStore
from meshkit.nats_client import connect
from meshkit.publish import publish_task
from meshkit.topology import TRAIN, declare
from tests.support.mesh import Mesh
from tests.train.support import gate_decision, prepare_job, sample_bundle

JobState = job_pb2.JobState
TS = job_pb2.TrainingState

ENV = {
    "CONTEXTMESH_TRAIN_ACK_WAIT_S": "2",
    "CONTEXTMESH_TRAIN_RETRY_BACKOFF_S": "1,1",
    # Long enough to be killed mid-run (about 100 steps of the tiny model, a few seconds).
    "CONTEXTMESH_TRAIN_EPOCHS": "8",
    "CONTEXTMESH_TRAIN_BATCH_SIZE": "8",
    "CONTEXTMESH_LOG_FORMAT": "text",
}


@pytest.fixture
async def mesh(fresh_nats: NatsServer, tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[Mesh]:
    m = Mesh(fresh_nats.url, tmp_path, env={**ENV, "CONTEXTMESH_BASE_MODEL": str(tiny_model_dir)})
    try:
        yield m
    finally:
        m.stop_all()


def training_replica(mesh: Mesh, names: list[str]) -> str | None:
    for name in names:
        path = mesh.log_path(name)
        if path.exists() and "training on bundle" in path.read_text():
            return name
    return None


async def test_a_killed_trainer_is_replaced_and_the_job_ends_done(
    mesh: Mesh, fresh_nats: NatsServer, tmp_path: Path
) -> None:
    replicas = ["trainsvc-1", "trainsvc-2"]
    for name in replicas:
        mesh.start("trainsvc", name=name)
    mesh.start("searchsvc")
    nc, js = await connect(NatsSettings(url=fresh_nats.url), name="crash-test")
    try:
        await declare(js, timing=Settings.from_env(ENV).timing)  # as the services declare it
        jobs = await JobStore.open(js)
        blobs = FilesystemBlobStore(tmp_path / "data" / "blobs")
        job_id, ref, task = await prepare_job(js, jobs, blobs, sample_bundle("carol"))
        await publish_task(js, TRAIN.subject, task, msg_id=task.meta.task_id)

        updates = jobs.watch(job_id)
        victim = None
        async with asyncio.timeout(90):
            async for job in updates:
                # total_steps is written as the optimiser loop starts: the run is under way.
                if job.training.state == TS.TRAINING_STATE_RUNNING and job.training.total_steps:
                    victim = training_replica(mesh, replicas)
                    assert victim is not None, mesh.logs()
                    mesh.kill(victim)  # SIGKILL: no ack, no nak, no goodbye
                    break
        assert victim is not None

        final = job_pb2.Job()
        async with asyncio.timeout(90):
            async for job in jobs.watch(job_id):
                final = job
        assert final.state == JobState.JOB_STATE_DONE, mesh.logs()
        assert final.training.state == gate_decision(final), final.training.reason
        assert final.training.attempt == 2, "the second delivery finished the job"
        assert final.bundle == ref
        survivor = next(r for r in replicas if r != victim)
        assert "training on bundle" in mesh.log_path(survivor).read_text()
        await blobs.close()
    finally:
        await nc.drain()

    target = f"127.0.0.1:{mesh.search_port}"
    await asyncio.to_thread(mesh.wait_serving, target, "searchsvc", 60.0)
    async with aio_bearer_channel(target, mesh.admin_token) as channel:
        stub = search_service_pb2_grpc.SearchServiceStub(channel)
        answer = await stub.Search(pb.SearchRequest(user="carol", query="Zig", top_k=3))
        assert answer.hits[0].repository == "carol/zig-tracer"
        assert answer.tuned == (final.training.state == TS.TRAINING_STATE_PUBLISHED)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Search(pb.SearchRequest(user="nobody", query="Zig"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
