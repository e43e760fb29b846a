"""The refresh pipeline end to end on every blob backend, chosen by CONTEXTMESH_BLOB_URL only.

The same processes as in production, on Azurite, fake-gcs-server and moto's S3 server:
changing clouds is configuration, not code (guarantees 6 and 9 in docs/architecture.md).
The test reads the bucket itself: the bundle, its index and every repository's result must be
there, and the filesystem store the services default to must hold nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsServer
from meshkit.blob import open_blob_store
from tests.support.emulators import Emulator, start_azurite, start_fake_gcs, start_moto_s3
from tests.support.mesh import Mesh

JobState = job_pb2.JobState
STARTERS: dict[str, Callable[[Path], Emulator]] = {
    "azure": start_azurite,
    "gcs": start_fake_gcs,
    "s3": start_moto_s3,
}


async def bucket_keys(url: str, bundle_key: str) -> tuple[bytes, set[str]]:
    """The bundle's bytes as the bucket holds them, and every key stored there."""
    async with open_blob_store(url) as store:
        return await store.get(bundle_key), {info.key async for info in store.list()}


@pytest.fixture(params=sorted(STARTERS), scope="module")
def emulator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Emulator]:
    with STARTERS[request.param](tmp_path_factory.mktemp(request.param)) as running:
        yield running


def test_refresh_download_and_unchanged_refresh_on_each_backend(
    emulator: Emulator,
    fresh_nats: NatsServer,
    tmp_path: Path,
    source_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = f"cm-{uuid.uuid4().hex[:10]}"
    emulator.create_bucket(bucket)
    for name, value in emulator.env.items():  # this process reads the bucket too
        monkeypatch.setenv(name, value)
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env={
            **emulator.env,
            "CONTEXTMESH_BLOB_URL": emulator.url(bucket, "contextmesh"),
            "CONTEXTMESH_SOURCE": "local",
            "CONTEXTMESH_LOCAL_SOURCE_DIR": str(source_dir),
        },
    )
    try:
        mesh.start("gateway")
        mesh.start("syncsvc")
        mesh.start("mergesvc")
        with mesh.channel() as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)

            def refresh() -> job_pb2.Job:
                job = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job
                final = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=90))[-1]
                assert final.final, mesh.logs()
                return final.job

            first = refresh()
            assert first.state == JobState.JOB_STATE_DONE, mesh.logs()
            assert (first.total, first.synced) == (12, 12)
            content = b"".join(
                c.data for c in stub.DownloadBundle(pb.DownloadBundleRequest(user="alice"))
            )
            assert hashlib.sha256(content).hexdigest() == first.bundle.content_hash

            second = refresh()  # discovery reads the bundle index back from this store
            assert (second.synced, second.unchanged) == (0, 12)
            assert second.bundle.content_hash == first.bundle.content_hash

        stored, keys = asyncio.run(
            bucket_keys(emulator.url(bucket, "contextmesh"), first.bundle.blob_key)
        )
        assert hashlib.sha256(stored).hexdigest() == first.bundle.content_hash
        assert len({k for k in keys if k.startswith("repos/alice/")}) == 12
        assert f"bundles/alice/{first.bundle.content_hash}/{first.id}.index.binpb" in keys
        default_store = tmp_path / "data" / "blobs"
        assert not default_store.exists() or not any(default_store.rglob("*.*")), (
            "nothing went to the filesystem store"
        )
    finally:
        mesh.stop_all()
