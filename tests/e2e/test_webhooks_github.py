"""GitHub push webhooks through real Envoy, the real processes and the GitHub stand-in.

The pushed repositories are left unchanged at the stand-in (their fingerprints match the
last bundle's), so only the webhook's resync can make discovery fetch them: the stand-in's
request log shows exactly which repositories a job fetched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsServer
from tests.e2e.test_refresh_github import CONTENT_KINDS, TOKEN, refresh, sync_settled
from tests.support.envoy import RestProxy, rest_proxy
from tests.support.fake_github import FakeGithub, populate
from tests.support.mesh import Mesh

JobState = job_pb2.JobState
SECRET = "e2e webhook secret"
WINDOW_S = 1.0
REPOS = 12


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    with FakeGithub(token=TOKEN) as gh:
        populate(gh, "octo", REPOS)
        yield gh


@pytest.fixture
def hook_mesh(
    fresh_nats: NatsServer, tmp_path: Path, github: FakeGithub
) -> Iterator[tuple[Mesh, RestProxy]]:
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env={
            "CONTEXTMESH_SOURCE": "github",
            "CONTEXTMESH_GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
            "CONTEXTMESH_GITHUB_WEBHOOK_SECRET": SECRET,
            "CONTEXTMESH_WEBHOOK_DEBOUNCE_S": str(WINDOW_S),
        },
    )
    mesh.start("gateway")
    mesh.start("syncsvc")
    mesh.start("mergesvc")
    try:
        with rest_proxy(mesh.gateway_target, tmp_path / "envoy") as proxy:
            yield mesh, proxy
    finally:
        mesh.stop_all()


def deliver(
    proxy: RestProxy, repository: str, *, delivery: str | None = None, secret: str = SECRET
) -> httpx.Response:
    owner, name = repository.split("/")
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "repository": {"full_name": repository, "name": name, "owner": {"login": owner}},
        }
    ).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(
        f"{proxy.base_url}/v1/webhooks/github",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={signature}",
        },
        timeout=10,
    )


def jobs(mesh: Mesh) -> list[job_pb2.Job]:
    with mesh.channel() as channel:
        stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
        return list(stub.ListJobs(pb.ListJobsRequest(user="octo", page_size=100)).jobs)


def next_job(mesh: Mesh, known: int, timeout_s: float = 30.0) -> job_pb2.Job:
    """The job started after the `known` ones, followed to its end."""
    deadline = time.monotonic() + timeout_s
    while len(listed := jobs(mesh)) <= known:
        assert time.monotonic() < deadline, mesh.logs()
        time.sleep(0.1)
    assert len(listed) == known + 1, listed
    with mesh.channel() as channel:
        stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
        final = list(stub.WatchJob(pb.WatchJobRequest(id=listed[0].id), timeout=60))[-1]
    assert final.final and final.job.state == JobState.JOB_STATE_DONE, mesh.logs()
    return final.job


def fetched(github: FakeGithub) -> set[str | None]:
    return {r.repo for r in github.requests() if r.kind in CONTENT_KINDS}


def test_signed_pushes_refresh_exactly_the_pushed_repositories(
    hook_mesh: tuple[Mesh, RestProxy], github: FakeGithub, fresh_nats: NatsServer
) -> None:
    mesh, proxy = hook_mesh
    first = refresh(mesh)
    assert (first.state, first.synced) == (JobState.JOB_STATE_DONE, REPOS), mesh.logs()
    sync_settled(fresh_nats.url)
    github.reset_log()

    # A wrong signature is refused and starts nothing.
    refused = deliver(proxy, "octo/repo-0003", secret="not the secret")
    assert refused.status_code == 401, refused.text
    assert "does not match" in refused.json()["message"]

    # A signed push: one job that fetches the pushed repository and nothing else.
    delivery = str(uuid.uuid4())
    accepted = deliver(proxy, "octo/repo-0003", delivery=delivery)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["outcome"] == "WEBHOOK_OUTCOME_ACCEPTED"
    pushed = next_job(mesh, known=1)
    assert list(pushed.resync) == ["octo/repo-0003"]
    assert (pushed.synced, pushed.unchanged) == (1, REPOS - 1)
    assert fetched(github) == {"octo/repo-0003"}
    assert github.count(kind="contents", repo="octo/repo-0003") >= 1

    # The same delivery again (GitHub's redelivery) starts nothing.
    again = deliver(proxy, "octo/repo-0003", delivery=delivery)
    assert again.json()["outcome"] == "WEBHOOK_OUTCOME_DUPLICATE", again.text
    time.sleep(3 * WINDOW_S)
    assert len(jobs(mesh)) == 2  # the first refresh and the push's job: none from 401 or dup

    # Ten pushes to three repositories within the window: one job re-syncing the three.
    sync_settled(fresh_nats.url)
    github.reset_log()
    burst = [f"octo/repo-000{i % 3 + 5}" for i in range(10)]
    for repository in burst:
        assert deliver(proxy, repository).status_code == 200
    collapsed = next_job(mesh, known=2)
    assert sorted(collapsed.resync) == sorted(set(burst))
    assert (collapsed.synced, collapsed.unchanged) == (3, REPOS - 3)
    assert fetched(github) == set(burst)
    time.sleep(3 * WINDOW_S)
    assert len(jobs(mesh)) == 3
