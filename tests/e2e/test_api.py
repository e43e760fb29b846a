"""BundleService as a client sees it: coalescing, watching, cancelling, clear errors."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsServer
from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from meshkit.topology import DISCOVER, MERGE, SYNC, Buckets
from syncsvc.plan import plan_key
from tests.support.mesh import Mesh

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value


def test_bad_requests_get_invalid_argument_naming_the_field(mesh: Mesh, stub) -> None:
    mesh.start("gateway")
    err = rpc_error(stub.RefreshBundle, pb.RefreshBundleRequest(user="bad name!"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user:" in err.details() and "GitHub user or organisation name" in err.details()
    for user in ("", "-leading", "trailing-", "x" * 40):
        assert rpc_error(stub.RefreshBundle, pb.RefreshBundleRequest(user=user)).code() == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    err = rpc_error(stub.GetJob, pb.GetJobRequest(id="../../etc/passwd"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "id:" in err.details()
    err = rpc_error(stub.GetJob, pb.GetJobRequest(id="01ARZ3NDEKTSV4RRFFQ69G5FAV"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(
        lambda r: list(stub.WatchJob(r)), pb.WatchJobRequest(id="01ARZ3NDEKTSV4RRFFQ69G5FAV")
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(stub.GetBundle, pb.GetBundleRequest(user="nobody"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "RefreshBundle" in err.details()
    err = rpc_error(stub.SearchBundle, pb.SearchBundleRequest(user="alice", query=""))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "query:" in err.details()


def test_refresh_coalesces_with_the_running_job_unless_forced(mesh: Mesh, stub) -> None:
    mesh.start("gateway")  # no workers: the job stays queued
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")), range(8))
        )
    ids = {a.job.id for a in answers}
    assert len(ids) == 1
    assert sorted(a.coalesced for a in answers) == [False] + [True] * 7
    forced = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice", force=True))
    assert forced.job.id not in ids and not forced.coalesced and forced.job.force


async def discover_settled(url: str, job_id: str) -> tuple[int, int]:
    """Wait until syncsvc has taken the discover task and acked it (the DISCOVER stream is
    empty and its consumer has nothing pending); then the job record's revision, and how
    many tasks SYNC and MERGE ever received."""
    nc, js = await connect(NatsSettings(url=url), name="test")
    try:
        async with asyncio.timeout(30):
            while True:
                info = await js.consumer_info(DISCOVER.stream, DISCOVER.consumer)
                settled = info.delivered.stream_seq >= 1 and not info.num_ack_pending
                if settled and not info.num_pending:
                    break
                await asyncio.sleep(0.05)
        assert (await js.stream_info(DISCOVER.stream)).state.messages == 0
        revision = (await (await js.key_value(Buckets.JOBS.name)).get(job_id)).revision
        published = [
            (await js.stream_info(stream.stream)).state.last_seq for stream in (SYNC, MERGE)
        ]
        return revision or 0, sum(published)
    finally:
        await nc.drain()


async def job_revision(url: str, job_id: str) -> int:
    nc, js = await connect(NatsSettings(url=url), name="test")
    try:
        return (await (await js.key_value(Buckets.JOBS.name)).get(job_id)).revision or 0
    finally:
        await nc.drain()


def test_cancel_ends_the_job_and_later_work_is_dropped(
    mesh: Mesh, stub, fresh_nats: NatsServer
) -> None:
    mesh.start("gateway")
    job = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job
    cancelled = stub.CancelJob(pb.CancelJobRequest(id=job.id)).job
    assert cancelled.state == JobState.JOB_STATE_CANCELLED and cancelled.end_time.seconds
    again = stub.CancelJob(pb.CancelJobRequest(id=job.id)).job  # idempotent
    assert again.state == JobState.JOB_STATE_CANCELLED
    revision = asyncio.run(job_revision(fresh_nats.url, job.id))
    mesh.start("syncsvc")  # picks up the discover task now, and must drop it
    mesh.start("mergesvc")
    # Only once syncsvc has taken the task and let it go is "dropped" observable.
    after, published = asyncio.run(discover_settled(fresh_nats.url, job.id))
    assert after == revision, "the dropped task wrote nothing to the job record"
    assert published == 0, "no sync or merge task was published for the cancelled job"
    assert not (mesh.workdir / "data" / "blobs" / plan_key(job.id)).exists()
    updates = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=10))
    assert len(updates) == 1 and updates[0].final
    assert updates[0].job.state == JobState.JOB_STATE_CANCELLED and updates[0].job.total == 0
    # A new refresh does not coalesce with a cancelled job.
    fresh = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice"))
    assert fresh.job.id != job.id and not fresh.coalesced


def test_many_watchers_see_the_same_end_and_a_late_watcher_gets_the_state_first(
    mesh: Mesh, stub
) -> None:
    mesh.start("gateway")
    job = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job
    with ThreadPoolExecutor(6) as pool:
        watches = [
            pool.submit(lambda: list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=60)))
            for _ in range(5)
        ]
        mesh.start("syncsvc")
        mesh.start("mergesvc")
        results = [w.result() for w in watches]
    for updates in results:
        assert updates[0].job.id == job.id
        assert updates[-1].final and updates[-1].job.state == JobState.JOB_STATE_DONE
        assert sum(u.final for u in updates) == 1
        done = [u.job.synced for u in updates]
        assert done == sorted(done)  # progress never goes backwards
    late = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=10))
    assert len(late) == 1 and late[0].final and late[0].job.state == JobState.JOB_STATE_DONE


def test_bad_repository_files_are_warnings_and_the_job_completes(
    mesh: Mesh, stub, source_dir: Path
) -> None:
    odd = source_dir / "alice"
    (odd / "project-00" / ".repo-context.json").write_text('{"project_identity": {"name": 1,}')
    (odd / "project-01" / ".repo-context.json").write_text("x" * 5000)
    (odd / "project-02" / ".repo-context.json").unlink()
    (odd / "project-03" / ".repo-context.json").write_text(json.dumps(["not", "an", "object"]))
    mesh.env["CONTEXTMESH_MAX_FILE_BYTES"] = "4096"
    mesh.start("gateway")
    mesh.start("syncsvc")
    mesh.start("mergesvc")
    job = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job
    final = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=60))[-1].job
    assert final.state == JobState.JOB_STATE_DONE and (final.synced, final.failed) == (12, 0)
    repos = {
        r.repository: r for r in stub.GetBundle(pb.GetBundleRequest(user="alice")).repositories
    }
    assert len(repos) == 12
    assert all(r.status == RepoStatus.REPO_STATUS_SYNCED for r in repos.values())
    assert any("not valid JSON" in w for w in repos["alice/project-00"].warnings)
    assert any("4096" in w or "too large" in w.lower() for w in repos["alice/project-01"].warnings)
    assert not repos["alice/project-02"].warnings  # a missing optional file is no error
    assert repos["alice/project-03"].warnings
    assert not repos["alice/project-04"].warnings
    bundle = b"".join(c.data for c in stub.DownloadBundle(pb.DownloadBundleRequest(user="alice")))
    document = json.loads(bundle)
    assert [r["repository"] for r in document["repositories"]] == sorted(repos)


def test_dead_letters_on_an_empty_stream_and_a_bad_page_token(mesh: Mesh) -> None:
    from contextmesh.ops.v1 import ops_service_pb2 as ops
    from contextmesh.ops.v1 import ops_service_pb2_grpc

    mesh.start("gateway")
    with mesh.channel(target=mesh.admin_target) as channel:
        stub = ops_service_pb2_grpc.OpsServiceStub(channel)
        page = stub.ListDeadLetters(ops.ListDeadLettersRequest())
        assert list(page.tasks) == [] and page.next_page_token == ""
        err = rpc_error(stub.ListDeadLetters, ops.ListDeadLettersRequest(page_token="abc"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.details()
        err = rpc_error(stub.RedriveDeadLetter, ops.RedriveDeadLetterRequest(sequence=99))
        assert err.code() == grpc.StatusCode.NOT_FOUND
