"""DeleteUser end to end: real services on the filesystem store and on fake-gcs-server.

After a user's refreshes, schedule and callback, and with another refresh of theirs still
running when the deletion starts, DeleteUser must leave no key that names the user or one of
their jobs in any bucket's stream, and no blob of theirs, once the mesh is idle; another
user's data stays whole, and the forgotten user can start afresh.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2
from contextmesh.ops.v1 import ops_service_pb2 as ops
from contextmesh.ops.v1 import ops_service_pb2_grpc
from google.protobuf import duration_pb2

from meshctl.nats_server import NatsServer
from meshkit.blob import open_blob_store
from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from meshkit.topology import ALL_BUCKETS, DEADLETTER, DISCOVER, MERGE, SYNC
from tests.e2e.conftest import write_repo
from tests.support.emulators import Emulator, start_fake_gcs
from tests.support.mesh import Mesh
from tests.support.polling import wait_until

JobState = job_pb2.JobState


@pytest.fixture(params=["fs", "gcs"], scope="module")
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Emulator | None]:
    if request.param == "fs":
        yield None
        return
    with start_fake_gcs(tmp_path_factory.mktemp("gcs")) as running:
        yield running


async def _stored_keys(nats_url: str) -> list[str]:
    """Every key of every bucket as its stream holds it (markers included), and a line per
    dead letter."""
    nc, js = await connect(NatsSettings(url=nats_url), name="forget-test")
    try:
        keys: list[str] = []
        for bucket in ALL_BUCKETS:
            info = await js.stream_info(f"KV_{bucket.name}", subjects_filter=">")
            keys += [f"{bucket.name}:{s}" for s in info.state.subjects or {}]
        letters = (await js.stream_info(DEADLETTER)).state.messages
        return keys + [f"{DEADLETTER}: a letter"] * letters
    finally:
        await nc.drain()


async def _idle(nats_url: str) -> bool:
    """No task waiting or in flight on the refresh path's streams."""
    nc, js = await connect(NatsSettings(url=nats_url), name="forget-idle")
    try:
        for ws in (DISCOVER, SYNC, MERGE):
            consumer = await js.consumer_info(ws.stream, ws.consumer)
            if consumer.num_pending or consumer.num_ack_pending:
                return False
        return True
    finally:
        await nc.drain()


async def _blobs(url: str) -> list[str]:
    async with open_blob_store(url) as blobs:
        return [info.key async for info in blobs.list()]


def test_delete_user_leaves_nothing_of_the_user_even_with_a_refresh_racing_it(
    store: Emulator | None,
    fresh_nats: NatsServer,
    tmp_path: Path,
    source_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i in range(3):
        write_repo(source_dir, "bob", f"tool-{i}", description=f"Tool {i}", tech=["Go"])
    env = {"CONTEXTMESH_SOURCE": "local", "CONTEXTMESH_LOCAL_SOURCE_DIR": str(source_dir)}
    blob_url = f"file://{tmp_path / 'data' / 'blobs'}"
    if store is not None:
        bucket = f"cm-{uuid.uuid4().hex[:10]}"
        store.create_bucket(bucket)
        blob_url = store.url(bucket, "contextmesh")
        env |= {**store.env, "CONTEXTMESH_BLOB_URL": blob_url}
        for name, value in store.env.items():  # this process lists the bucket too
            monkeypatch.setenv(name, value)
    mesh = Mesh(fresh_nats.url, tmp_path, env=env)
    try:
        for service in ("gateway", "syncsvc", "mergesvc"):
            mesh.start(service)
        with mesh.channel() as channel, mesh.channel(target=mesh.admin_target) as admin:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            ops_stub = ops_service_pb2_grpc.OpsServiceStub(admin)

            def refreshed(user: str, *, force: bool = False) -> job_pb2.Job:
                job = stub.RefreshBundle(pb.RefreshBundleRequest(user=user, force=force)).job
                return list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=90))[-1].job

            assert refreshed("alice").state == JobState.JOB_STATE_DONE, mesh.logs()
            assert refreshed("alice", force=True).state == JobState.JOB_STATE_DONE
            kept = refreshed("bob")
            assert kept.state == JobState.JOB_STATE_DONE, mesh.logs()
            stub.SetSchedule(
                pb.SetScheduleRequest(user="alice", interval=duration_pb2.Duration(seconds=3600))
            )
            stub.SetCallback(pb.SetCallbackRequest(user="alice", url="http://127.0.0.1:9/hook"))
            jobs = [j.id for j in stub.ListJobs(pb.ListJobsRequest(user="alice")).jobs]

            racing = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice", force=True)).job
            jobs.append(racing.id)
            forgotten = ops_stub.DeleteUser(ops.DeleteUserRequest(user="alice"))
            # (How many blobs it counts varies: the racing job's workers take back theirs.)
            assert forgotten.jobs == 3 and forgotten.blobs > 0

            # What was in flight finishes or is dropped; then nothing of alice is left.
            wait_until(lambda: asyncio.run(_idle(fresh_nats.url)), 60, "the mesh is idle")
            keys = asyncio.run(_stored_keys(fresh_nats.url))
            blobs = asyncio.run(_blobs(blob_url))
            assert not [k for k in keys if k.startswith(DEADLETTER)], keys
            for name in ("alice", *jobs):
                assert not [k for k in keys if name in k], (name, keys)
                assert not [b for b in blobs if name in b], (name, blobs)
            with pytest.raises(grpc.RpcError) as gone:
                stub.GetBundle(pb.GetBundleRequest(user="alice"))
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as unknown:
                stub.GetJob(pb.GetJobRequest(id=racing.id))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

            # Someone else's data is whole; a second deletion finds nothing to do.
            assert stub.GetBundle(pb.GetBundleRequest(user="bob")).job_id == kept.id
            assert any(b.startswith("repos/bob/") for b in blobs)
            again = ops_stub.DeleteUser(ops.DeleteUserRequest(user="alice"))
            assert (again.jobs, again.blobs, again.dead_letters) == (0, 0, 0)
            # Forgotten is not banned: the user can start afresh.
            assert refreshed("alice").state == JobState.JOB_STATE_DONE, mesh.logs()
    finally:
        mesh.stop_all()
