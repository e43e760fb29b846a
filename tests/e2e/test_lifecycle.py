"""A job's life at its edges, with the services as real processes: stalled jobs end, a parked
sync task redriven brings its repository back, training follows a ready bundle and never
holds a refresh back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.job.v1 import job_pb2
from contextmesh.ops.v1 import ops_service_pb2 as ops
from contextmesh.ops.v1 import ops_service_pb2_grpc

from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from meshkit.topology import DISCOVER, TRAIN, Buckets
from tests.e2e.conftest import write_repo
from tests.support.mesh import ROOT, Mesh
from tests.train.support import gate_decision, tiny_model_dir

__all__ = ["tiny_model_dir"]  # a fixture of tests/train, used here

JobState = job_pb2.JobState
TS = job_pb2.TrainingState
RepoStatus = job_pb2.RepoStatus


def final(stub, job_id: str, timeout: float = 60) -> pb.WatchJobResponse:
    """The last message of the job's watch, which must say the job ended."""
    last = None
    for update in stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=timeout):
        last = update
    assert last is not None and last.final, last
    return last


def until_bundle_ready(stub, job_id: str, timeout: float = 60) -> pb.WatchJobResponse:
    """Watch the job until its bundle is ready; the stream goes on for training."""
    stream = stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=timeout)
    try:
        for update in stream:
            if update.bundle_ready:
                return update
            assert not update.final, update
    finally:
        stream.cancel()
    raise AssertionError("the watch ended before the bundle was ready")


def stream_state(url: str, stream: str) -> tuple[int, int]:
    """(messages, last sequence) of a stream."""

    async def read() -> tuple[int, int]:
        nc, js = await connect(NatsSettings(url=url), name="test")
        try:
            info = await js.stream_info(stream)
            return info.state.messages, info.state.last_seq
        finally:
            await nc.drain()

    return asyncio.run(read())


@pytest.fixture
def ops_stub(mesh: Mesh) -> Iterator[ops_service_pb2_grpc.OpsServiceStub]:
    with mesh.channel(target=mesh.admin_target) as channel:
        yield ops_service_pb2_grpc.OpsServiceStub(channel)


def test_a_job_whose_tasks_were_purged_is_ended_and_stops_coalescing(
    mesh: Mesh, stub, fresh_nats
) -> None:
    mesh.start(
        "gateway", env={"CONTEXTMESH_JOB_STALL_S": "1", "CONTEXTMESH_SWEEP_INTERVAL_S": "0.2"}
    )
    lost = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job

    async def purge() -> None:
        nc, js = await connect(NatsSettings(url=fresh_nats.url), name="test")
        try:
            await js.purge_stream(DISCOVER.stream)  # no syncsvc will ever see the task
        finally:
            await nc.drain()

    asyncio.run(purge())
    ended = final(stub, lost.id).job
    assert ended.state == JobState.JOB_STATE_FAILED and "no progress" in ended.error
    assert ended.error_code == job_pb2.ERROR_CODE_STALLED
    again = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice"))
    assert not again.coalesced and again.job.id != lost.id


def test_a_parked_sync_task_redriven_brings_its_repository_into_a_new_bundle(
    mesh: Mesh, stub, ops_stub, tmp_path: Path
) -> None:
    # Short retries, the same in every process (each declares the consumers).
    mesh.env["CONTEXTMESH_SYNC_RETRY_BACKOFF_S"] = "0.2,0.2"
    # The fault: a file where the repository's result folder must go, so storing its result
    # fails on every delivery (not a source error: those fail the repository at once).
    blocked = tmp_path / "data" / "blobs" / "repos" / "alice" / "project-03"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("in the way")
    for service in ("gateway", "syncsvc", "mergesvc"):
        mesh.start(service)

    first = final(stub, stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job.id).job
    assert first.state == JobState.JOB_STATE_DONE
    assert (first.synced, first.failed) == (11, 1)
    assert [f.repository for f in first.failures] == ["alice/project-03"]
    # The caller reads what happened; the internal error is in the dead letter only.
    assert "parked for an operator" in first.failures[0].reason
    assert "NotADirectoryError" not in first.failures[0].reason
    parked = [
        t
        for t in ops_stub.ListDeadLetters(ops.ListDeadLettersRequest()).tasks
        if t.job_id == first.id
    ]
    assert len(parked) == 1 and parked[0].deliveries == 3
    assert "NotADirectoryError" in parked[0].reason

    blocked.unlink()  # the fault is fixed
    redriven = ops_stub.RedriveDeadLetter(ops.RedriveDeadLetterRequest(sequence=parked[0].sequence))
    job = redriven.job
    assert job.id != first.id and redriven.task.job_id == first.id
    assert (job.redrive.stream, job.redrive.repository) == ("SYNC", "alice/project-03")

    done = final(stub, job.id).job
    assert done.state == JobState.JOB_STATE_DONE
    assert (done.synced, done.unchanged, done.failed) == (1, 11, 0)
    assert done.bundle.content_hash != first.bundle.content_hash
    bundle = stub.GetBundle(pb.GetBundleRequest(user="alice"))
    assert bundle.job_id == job.id
    entry = next(r for r in bundle.repositories if r.repository == "alice/project-03")
    assert entry.status == RepoStatus.REPO_STATUS_SYNCED and entry.result_key

    again = ops_stub.RedriveDeadLetter(ops.RedriveDeadLetterRequest(sequence=parked[0].sequence))
    assert again.job.id == job.id  # the same job: nothing ran twice
    assert stub.GetJob(pb.GetJobRequest(id=job.id)).job == done
    remaining = ops_stub.ListDeadLetters(ops.ListDeadLettersRequest()).tasks
    assert parked[0].sequence not in [t.sequence for t in remaining]


@pytest.mark.slow
def test_training_follows_a_ready_bundle_and_never_holds_a_refresh_back(
    mesh: Mesh, stub, fresh_nats, source_dir: Path, tiny_model_dir: Path
) -> None:
    mesh.env.update(
        {
            "CONTEXTMESH_TRAINING": "on",
            "CONTEXTMESH_BASE_MODEL": str(tiny_model_dir),
            "CONTEXTMESH_TRAIN_DEVICE": "cpu",
        }
    )
    for service in ("gateway", "syncsvc", "mergesvc"):
        mesh.start(service)
    trainsvc = mesh.start("trainsvc")

    def refresh() -> pb.RefreshBundleResponse:
        return stub.RefreshBundle(pb.RefreshBundleRequest(user="alice"))

    trained = final(stub, refresh().job.id, timeout=180).job
    assert trained.state == JobState.JOB_STATE_DONE
    assert trained.training.state == gate_decision(trained)

    os.killpg(trainsvc.pid, signal.SIGSTOP)  # hung, not dead: nothing will train now
    try:
        # Nothing changed and the serving model was tuned on this bundle: DONE at once,
        # and trainsvc is not even asked.
        train_before = stream_state(fresh_nats.url, TRAIN.stream)
        unchanged = final(stub, refresh().job.id, timeout=30).job
        assert unchanged.state == JobState.JOB_STATE_DONE
        assert unchanged.bundle.content_hash == trained.bundle.content_hash
        assert unchanged.training.state == TS.TRAINING_STATE_SKIPPED
        assert unchanged.training.model_key == trained.training.model_key
        assert stream_state(fresh_nats.url, TRAIN.stream) == train_before

        # A change: the new bundle is ready while its training waits for trainsvc...
        write_repo(source_dir, "alice", "project-00", description="Now in Rust", tech=["Rust"])
        changed = until_bundle_ready(stub, refresh().job.id)
        assert changed.job.state == JobState.JOB_STATE_BUNDLE_READY
        assert changed.job.HasField("bundle_ready_time")
        assert changed.job.bundle.content_hash != trained.bundle.content_hash
        # ...and a refresh meanwhile is a job of its own, not folded into that training.
        later = refresh()
        assert not later.coalesced and later.job.id != changed.job.id

        watcher = subprocess.Popen(
            [sys.executable, "-m", "meshctl", "job", changed.job.id, "--watch"],
            cwd=ROOT,
            env={
                **mesh.env,
                "CONTEXTMESH_TARGET": mesh.gateway_target,
                "CONTEXTMESH_TOKEN": mesh.token("alice"),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        os.killpg(trainsvc.pid, signal.SIGCONT)

    output, _ = watcher.communicate(timeout=180)
    assert watcher.returncode == 0, output
    lines = output.splitlines()
    assert lines[0].startswith("Bundle ready: "), output
    assert all(not line.startswith(("Syncing", "Merging")) for line in lines), output
    assert any(line.startswith("  training ") for line in lines), output

    done = final(stub, changed.job.id, timeout=180).job
    assert done.state == JobState.JOB_STATE_DONE and done.training.state != TS.TRAINING_STATE_FAILED
    also = final(stub, later.job.id, timeout=180).job
    assert also.state == JobState.JOB_STATE_DONE
    assert also.bundle.content_hash == done.bundle.content_hash

    async def serving_bundle() -> str:
        nc, js = await connect(NatsSettings(url=fresh_nats.url), name="test")
        try:
            entry = await (await js.key_value(Buckets.MODELS.name)).get("alice")
            return bundle_pb2.ModelPointer.FromString(entry.value or b"").bundle_hash
        finally:
            await nc.drain()

    assert asyncio.run(serving_bundle()) == done.bundle.content_hash
