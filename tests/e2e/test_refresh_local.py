"""A refresh through the real processes: gateway, two sync workers, merge."""

from __future__ import annotations

from pathlib import Path

from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.job.v1 import job_pb2

from tests.e2e.conftest import write_repo
from tests.support.mesh import Mesh

JobState = job_pb2.JobState


def watch_to_end(stub, job_id: str, timeout: float = 60) -> list[pb.WatchJobResponse]:
    return list(stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=timeout))


def test_refresh_completes_and_unchanged_refresh_fetches_nothing(
    mesh: Mesh, stub, source_dir: Path
):
    mesh.start("gateway")
    mesh.start("syncsvc", name="syncsvc-1")
    mesh.start("syncsvc", name="syncsvc-2")
    mesh.start("mergesvc")

    first = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice"))
    assert first.job.state == JobState.JOB_STATE_QUEUED
    updates = watch_to_end(stub, first.job.id)
    final = updates[-1]
    assert final.final, mesh.logs()
    assert final.job.state == JobState.JOB_STATE_DONE, mesh.logs()
    assert (final.job.total, final.job.synced, final.job.unchanged) == (12, 12, 0)
    assert [u.final for u in updates].count(True) == 1

    bundle = stub.GetBundle(pb.GetBundleRequest(user="alice"))
    assert len(bundle.repositories) == 12
    assert bundle.bundle.content_hash == final.job.bundle.content_hash

    second = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice"))
    final2 = watch_to_end(stub, second.job.id)[-1]
    assert (final2.job.synced, final2.job.unchanged) == (0, 12)
    assert final2.job.bundle.content_hash == final.job.bundle.content_hash

    write_repo(
        source_dir, "alice", "project-03", description="Rewritten in Rust", tech=["Rust", "Tokio"]
    )
    third = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice"))
    final3 = watch_to_end(stub, third.job.id)[-1]
    assert (final3.job.synced, final3.job.unchanged) == (1, 11)
    assert final3.job.bundle.content_hash != final.job.bundle.content_hash
