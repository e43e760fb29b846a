"""A refresh from the GitHub stand-in through the real processes (guarantee 5,
docs/architecture.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.rpc import code_pb2

from meshctl.nats_server import NatsServer
from meshkit.config import NatsSettings
from meshkit.job_errors import error_reason
from meshkit.nats_client import connect
from meshkit.topology import DAY, DEADLETTER, SYNC, Buckets
from syncsvc.sources.github_app import installation_key
from syncsvc.sources.github_credentials import credential_id
from tests.support.fake_github import FakeGithub, populate
from tests.support.mesh import Mesh

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus
TOKEN = "ghp_" + "Z" * 36
CONTENT_KINDS = ("contents", "readme")
REPOS = 150


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    with FakeGithub(token=TOKEN) as gh:
        populate(gh, "octo", REPOS)
        yield gh


@pytest.fixture
def gh_mesh(fresh_nats: NatsServer, tmp_path: Path, github: FakeGithub) -> Iterator[Mesh]:
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env={
            "CONTEXTMESH_SOURCE": "github",
            "CONTEXTMESH_GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
            "CONTEXTMESH_GITHUB_MAX_RETRIES": "1",
            "CONTEXTMESH_MAX_FILE_BYTES": "65536",
        },
    )
    mesh.start("gateway")
    mesh.start("syncsvc", name="syncsvc-1")
    mesh.start("syncsvc", name="syncsvc-2")
    mesh.start("mergesvc")
    try:
        yield mesh
    finally:
        mesh.stop_all()


def refresh(mesh: Mesh, user: str = "octo") -> job_pb2.Job:
    with mesh.channel() as channel:
        stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
        job = stub.RefreshBundle(pb.RefreshBundleRequest(user=user)).job
        final = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=120))[-1]
        assert final.final, mesh.logs()
        return final.job


def content_requests(gh: FakeGithub, status: int | None = None) -> int:
    return sum(gh.count(kind=kind, status=status) for kind in CONTENT_KINDS)


def sync_settled(url: str, timeout_s: float = 60.0) -> None:
    """Until no SYNC delivery is pending or unacknowledged. Delivery is at least once: a
    loaded machine may redeliver a task whose outcome already counted, and that late copy's
    fetches belong to the job that published it, not to the next refresh."""

    async def settle() -> None:
        nc, js = await connect(NatsSettings(url=url), name="e2e-settle")
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                info = await js.consumer_info(SYNC.stream, SYNC.consumer)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
                assert time.monotonic() < deadline, f"SYNC never settled: {info}"
                await asyncio.sleep(0.1)
        finally:
            await nc.close()

    asyncio.run(settle())


def test_first_unchanged_and_one_changed_refresh(
    gh_mesh: Mesh, github: FakeGithub, fresh_nats: NatsServer
) -> None:
    first = refresh(gh_mesh)
    assert first.state == JobState.JOB_STATE_DONE, gh_mesh.logs()
    assert (first.total, first.synced, first.failed) == (REPOS, REPOS, 0)
    assert content_requests(github, 200) >= REPOS * 2  # context, README, extra files
    assert github.count(kind="list") == 2  # 150 repositories: two pages of 100

    sync_settled(fresh_nats.url)
    github.reset_log()
    second = refresh(gh_mesh)
    assert (second.synced, second.unchanged) == (0, REPOS)
    assert content_requests(github) == 0  # unchanged repositories cost nothing
    assert github.requests()
    assert all(r.status == 304 for r in github.requests())  # user lookup and pages: 304s
    assert second.bundle.content_hash == first.bundle.content_hash

    sync_settled(fresh_nats.url)
    github.reset_log()
    github.change_file("octo/repo-0042", "README.md", "# repo-0042\n\nNow with MQTT support.\n")
    third = refresh(gh_mesh)
    assert (third.synced, third.unchanged) == (1, REPOS - 1)
    fetched = {r.repo for r in github.requests() if r.kind in CONTENT_KINDS}
    assert fetched == {"octo/repo-0042"}
    assert third.bundle.content_hash != first.bundle.content_hash

    logs = gh_mesh.logs()
    assert TOKEN not in logs and TOKEN[:12] not in logs  # the token never reaches a log


def test_failing_and_oversized_repositories_do_not_fail_the_job(
    gh_mesh: Mesh, github: FakeGithub
) -> None:
    github.fail(500, repo="octo/repo-0007")  # always
    github.change_file("octo/repo-0009", "README.md", "x" * 100_000)  # over the 64 KiB cap
    job = refresh(gh_mesh)
    assert job.state == JobState.JOB_STATE_DONE, gh_mesh.logs()
    assert (job.synced, job.failed) == (REPOS - 1, 1)
    assert [f.repository for f in job.failures] == ["octo/repo-0007"]
    assert "500" in job.failures[0].reason and TOKEN not in job.failures[0].reason
    with gh_mesh.channel() as channel:
        stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
        repos = {
            r.repository: r for r in stub.GetBundle(pb.GetBundleRequest(user="octo")).repositories
        }
    assert repos["octo/repo-0007"].status == RepoStatus.REPO_STATUS_FAILED
    assert repos["octo/repo-0007"].reason == job.failures[0].reason
    assert repos["octo/repo-0009"].status == RepoStatus.REPO_STATUS_SYNCED
    assert any("README" in w for w in repos["octo/repo-0009"].warnings)


def test_an_unknown_user_fails_the_job_with_a_clear_error(
    gh_mesh: Mesh, fresh_nats: NatsServer
) -> None:
    started = time.monotonic()
    job = refresh(gh_mesh, user="nobody-here")
    assert time.monotonic() - started < 30, gh_mesh.logs()  # processes starting included
    assert job.state == JobState.JOB_STATE_FAILED
    assert "nobody-here" in job.error and "not found" in job.error
    assert job.error_code == job_pb2.ERROR_CODE_USER_NOT_FOUND
    assert "check the name" in job.error
    assert job.error_status.message == job.error
    assert (job.error_status.code, error_reason(job)) == (code_pb2.NOT_FOUND, "USER_NOT_FOUND")
    # The caller's mistake leaves no operator work and no state that outlives its TTL: no
    # dead letter is parked, and the user's cm_active entry (like the job record) expires.
    state = asyncio.run(_leftovers(fresh_nats.url, "nobody-here"))
    assert state == {"dead letters": 0, "active entry": job.id, "active ttl s": DAY}


async def _leftovers(url: str, user: str) -> dict[str, object]:
    nc, js = await connect(NatsSettings(url=url), name="e2e-check")
    try:
        active = await js.key_value(Buckets.ACTIVE.name)
        entry = await active.get(user)
        return {
            "dead letters": (await js.stream_info(DEADLETTER)).state.messages,
            "active entry": (entry.value or b"").decode(),
            "active ttl s": (await js.stream_info(f"KV_{Buckets.ACTIVE.name}")).config.max_age,
        }
    finally:
        await nc.close()


OWN_TOKEN = "ghp_" + "Y" * 36
APP_ID = 777
INSTALLATION = 31337


def test_a_user_with_their_own_token_is_synced_with_it_by_every_replica(
    fresh_nats: NatsServer, tmp_path: Path, github: FakeGithub
) -> None:
    """The credential store, the shared budget bucket and the replica heartbeats, wired into
    the real syncsvc processes: alice's repositories go out with her token from whichever
    replica takes them, bob's with tokens the replicas minted for his GitHub App
    installation, octo's with the shared one; the bucket names each by id only."""
    populate(github, "alice", 12)
    github.add_user_token(OWN_TOKEN, "alice")
    populate(github, "bob", 6)
    app_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    github.add_app(APP_ID, app_key.public_key())
    github.add_installation(INSTALLATION, APP_ID, "bob")
    key_file = tmp_path / "app-key.pem"
    key_file.write_bytes(
        app_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    store = tmp_path / "credentials"
    store.mkdir()
    (store / "alice").write_text(OWN_TOKEN + "\n")
    (store / "bob").write_text(f"installation:{INSTALLATION}\n")
    mesh = Mesh(
        fresh_nats.url,
        tmp_path,
        env={
            "CONTEXTMESH_SOURCE": "github",
            "CONTEXTMESH_GITHUB_API_URL": github.url,
            "GITHUB_TOKEN": TOKEN,
            "CONTEXTMESH_GITHUB_USERS_DIR": str(store),
            "CONTEXTMESH_GITHUB_APP_ID": str(APP_ID),
            "CONTEXTMESH_GITHUB_APP_KEY_FILE": str(key_file),
            "CONTEXTMESH_GITHUB_MAX_RETRIES": "1",
        },
    )
    try:
        mesh.start("gateway")
        mesh.start("syncsvc", name="syncsvc-1")
        mesh.start("syncsvc", name="syncsvc-2")
        mesh.start("mergesvc")
        shared_left = github.rate_remaining()
        alice = refresh(mesh, "alice")
        assert (alice.state, alice.synced) == (JobState.JOB_STATE_DONE, 12), mesh.logs()
        # Her refresh spent her own budget, none of the shared token's.
        assert github.rate_remaining() == shared_left
        assert github.rate_remaining(OWN_TOKEN) < shared_left
        sync_settled(fresh_nats.url)
        bob = refresh(mesh, "bob")
        assert (bob.state, bob.synced) == (JobState.JOB_STATE_DONE, 6), mesh.logs()
        sync_settled(fresh_nats.url)
        octo = refresh(mesh, "octo")
        assert (octo.state, octo.synced) == (JobState.JOB_STATE_DONE, REPOS), mesh.logs()

        requests = github.requests()
        alices = {r.authorization for r in requests if (r.repo or "").startswith("alice/")}
        octos = {r.authorization for r in requests if (r.repo or "").startswith("octo/")}
        bobs = {r.authorization for r in requests if (r.repo or "").startswith("bob/")}
        minted = github.minted(INSTALLATION)
        assert alices == {f"Bearer {OWN_TOKEN}"}
        assert octos == {f"Bearer {TOKEN}"}
        assert bobs and bobs <= {f"Bearer {t}" for t in minted}
        assert 1 <= len(minted) <= 2  # at most one mint per replica

        async def buckets() -> tuple[dict[str, bytes], int]:
            nc, js = await connect(NatsSettings(url=fresh_nats.url), name="e2e-budgets")
            try:
                kv = await js.key_value(Buckets.GITHUB_BUDGETS.name)
                entries = {k: (await kv.get(k)).value or b"" for k in await kv.keys()}
                replicas = await js.key_value(Buckets.SYNC_REPLICAS.name)
                return entries, len(await replicas.keys())
            finally:
                await nc.close()

        entries, live = asyncio.run(buckets())
        installation = installation_key(APP_ID, INSTALLATION)
        assert set(entries) == {credential_id(TOKEN), credential_id(OWN_TOKEN), installation}
        stored = b"".join(k.encode() + v for k, v in entries.items())
        for secret in (TOKEN, OWN_TOKEN, *minted):
            assert secret.encode() not in stored
        assert live == 2  # both replicas heartbeat
        logs = mesh.logs()
        assert OWN_TOKEN not in logs and OWN_TOKEN[:12] not in logs
        jwts = [r.authorization or "" for r in github.requests(kind="mint")]
        for secret in (*minted, *jwts):
            assert secret.removeprefix("Bearer ") not in logs
    finally:
        mesh.stop_all()
