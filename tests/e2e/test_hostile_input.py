"""A user whose repository holds hostile text still gets a bundle, within seconds.

A lone surrogate ("\\ud800", valid JSON) in one `.repo-context.json` used to crash discovery
on every delivery: the whole job ended FAILED after minutes of retries. Through the real
processes, the job now ends DONE with every repository synced and the hostile ones warned.
"""

from __future__ import annotations

import time
from pathlib import Path

from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.job.v1 import job_pb2

from tests.e2e.conftest import write_repo
from tests.support.mesh import Mesh

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus
# Far below the minutes that retries took (discovery backs off 1, 5, 15 and 60 s).
DEADLINE_S = 30


def test_lone_surrogates_warn_their_repository_and_the_job_ends_done(
    mesh: Mesh, stub, source_dir: Path
) -> None:
    # The .repo-context.json is written as ASCII JSON: the surrogate is the escape \ud800.
    write_repo(
        source_dir, "alice", "project-05", description="\ud800", tech=["Python"], readme="# 05\n"
    )
    write_repo(source_dir, "alice", "project-07", description="fine", tech=["Rust\udc00", "\ud83d"])
    mesh.start("gateway")
    mesh.start("syncsvc", name="syncsvc-1")
    mesh.start("syncsvc", name="syncsvc-2")
    mesh.start("mergesvc")

    started = time.monotonic()
    job = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job
    updates = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=DEADLINE_S))
    elapsed = time.monotonic() - started

    final = updates[-1]
    assert final.final, mesh.logs()
    assert final.job.state == JobState.JOB_STATE_DONE, (final.job.error, mesh.logs())
    assert (final.job.total, final.job.synced, final.job.failed) == (12, 12, 0)
    assert elapsed < DEADLINE_S

    bundle = stub.GetBundle(pb.GetBundleRequest(user="alice"))
    entries = {entry.repository: entry for entry in bundle.repositories}
    assert all(e.status == RepoStatus.REPO_STATUS_SYNCED for e in entries.values())
    for name, where in (("project-05", "description"), ("project-07", "tech_stack.primary")):
        warnings = "\n".join(entries[f"alice/{name}"].warnings)
        assert where in warnings and "U+FFFD" in warnings, warnings
    assert not entries["alice/project-03"].warnings
    assert "Traceback" not in mesh.logs()
