"""A user whose repository holds hostile text still gets a bundle, within seconds.

A lone surrogate ("\\ud800", valid JSON) in one `.repo-context.json` used to crash discovery
on every delivery: the whole job ended FAILED after minutes of retries. Through the real
processes, the job now ends DONE with every repository synced and the hostile ones warned.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsServer
from tests.e2e.conftest import write_repo
from tests.support.fake_github import FakeGithub, populate, repo_files
from tests.support.mesh import Mesh

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus
# Far below the minutes that retries took (discovery backs off 1, 5, 15 and 60 s), with room
# for processes still starting on a busy machine.
DEADLINE_S = 45


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


def test_lone_surrogates_in_github_json_warn_their_repository(
    fresh_nats: NatsServer, tmp_path: Path
) -> None:
    with FakeGithub() as github:
        populate(github, "octo", 5)
        files = repo_files("octo", "hostile", 5)
        context = json.loads(files[".repo-context.json"])
        context["summary"] = "\ud800"
        files[".repo-context.json"] = json.dumps(context).encode()  # ASCII: the escape \ud800
        github.add_repo(
            "octo/hostile", files, description="\ud800", topics=["ok", "\udc00"], language="\ud83d"
        )
        mesh = Mesh(
            fresh_nats.url,
            tmp_path,
            env={
                "CONTEXTMESH_SOURCE": "github",
                "CONTEXTMESH_GITHUB_API_URL": github.url,
                "CONTEXTMESH_GITHUB_MAX_RETRIES": "1",
            },
        )
        try:
            mesh.start("gateway")
            mesh.start("syncsvc")
            mesh.start("mergesvc")
            with mesh.channel() as channel:
                stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
                job = stub.RefreshBundle(pb.RefreshBundleRequest(user="octo")).job
                updates = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=DEADLINE_S))
                final = updates[-1].job
                assert final.state == JobState.JOB_STATE_DONE, (final.error, mesh.logs())
                assert (final.total, final.synced, final.failed) == (6, 6, 0)
                bundle = stub.GetBundle(pb.GetBundleRequest(user="octo"))
            entries = {entry.repository: entry for entry in bundle.repositories}
            warnings = "\n".join(entries["octo/hostile"].warnings)
            for where in ("summary", "metadata.description", "metadata.topics"):
                assert where in warnings, warnings
            assert not entries["octo/repo-0000"].warnings
            assert "Traceback" not in mesh.logs()
        finally:
            mesh.stop_all()
