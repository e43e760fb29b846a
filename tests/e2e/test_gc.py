"""`contextmesh gc` end to end: real services on the filesystem store, the CLI on the admin
plane. After a user's bundle changed three times, `gc --dry-run -v` lists what would go and
deletes nothing; `gc` deletes exactly that; the serving bundle is whole and downloadable,
and the next refresh, which carries every repository over, succeeds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsServer
from meshkit.blob import FilesystemBlobStore
from tests.e2e.conftest import write_repo
from tests.support.mesh import ROOT, Mesh

JobState = job_pb2.JobState


def gc(mesh: Mesh, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "meshctl", "gc", *args],
        cwd=ROOT,
        env={
            **mesh.env,
            "CONTEXTMESH_ADMIN_TARGET": mesh.admin_target,
            "CONTEXTMESH_TOKEN": mesh.admin_token,
        },
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


async def _keys(root: Path) -> set[str]:
    async with FilesystemBlobStore(root) as blobs:
        return {info.key async for info in blobs.list()}


def listed_keys(output: list[str]) -> set[str]:
    return {line.strip() for line in output if line.startswith("  ")}


def test_gc_dry_run_then_gc_keeps_the_serving_bundle_whole(
    fresh_nats: NatsServer, tmp_path: Path, source_dir: Path
) -> None:
    for name in ("alpha", "beta"):
        write_repo(source_dir, "carol", name, description=f"The {name} tool", tech=["Go"])
    env = {
        "CONTEXTMESH_SOURCE": "local",
        "CONTEXTMESH_LOCAL_SOURCE_DIR": str(source_dir),
        "CONTEXTMESH_KEEP_BUNDLES": "1",
    }
    blob_root = tmp_path / "data" / "blobs"
    mesh = Mesh(fresh_nats.url, tmp_path, env=env)
    try:
        for service in ("gateway", "syncsvc", "mergesvc"):
            mesh.start(service)
        with mesh.channel() as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)

            def refreshed() -> job_pb2.Job:
                job = stub.RefreshBundle(pb.RefreshBundleRequest(user="carol")).job
                return list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=90))[-1].job

            for version in range(3):
                write_repo(
                    source_dir, "carol", "alpha", description=f"Version {version}", tech=["Go"]
                )
                assert refreshed().state == JobState.JOB_STATE_DONE, mesh.logs()
            before = asyncio.run(_keys(blob_root))

            dry = gc(mesh, "--dry-run", "-v")
            assert asyncio.run(_keys(blob_root)) == before
            would_go = listed_keys(dry)
            assert any(line.startswith("would delete 2 repos blobs") for line in dry), dry
            assert would_go and would_go <= before

            done = gc(mesh, "-v")
            assert listed_keys(done) == would_go
            assert asyncio.run(_keys(blob_root)) == before - would_go

            bundle = stub.GetBundle(pb.GetBundleRequest(user="carol"))
            downloaded = b"".join(
                c.data for c in stub.DownloadBundle(pb.DownloadBundleRequest(user="carol"))
            )
            assert len(downloaded) == bundle.bundle.size_bytes
            again = refreshed()
            assert again.state == JobState.JOB_STATE_DONE, mesh.logs()
            assert again.bundle.content_hash == bundle.bundle.content_hash
    finally:
        mesh.stop_all()
