"""Completion notifications through the real processes: a refresh that ends reaches the
user's callback server as a correctly signed summary; a server that keeps failing is retried
and its notification parked, and a redrive delivers it again under a new delivery id."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2
from contextmesh.ops.v1 import ops_service_pb2 as ops
from contextmesh.ops.v1 import ops_service_pb2_grpc

from tests.support.callback_server import CallbackServer
from tests.support.mesh import Mesh


def start(mesh: Mesh) -> None:
    for service in ("gateway", "syncsvc", "mergesvc", "notifysvc"):
        mesh.start(service)


def refresh_to_end(stub: bundle_service_pb2_grpc.BundleServiceStub) -> job_pb2.Job:
    job_id = stub.RefreshBundle(pb.RefreshBundleRequest(user="alice")).job.id
    return list(stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=60))[-1].job


def test_an_ended_refresh_reaches_the_callback_signed(
    mesh: Mesh, stub: bundle_service_pb2_grpc.BundleServiceStub
) -> None:
    start(mesh)
    with CallbackServer() as receiver:
        secret = stub.SetCallback(pb.SetCallbackRequest(user="alice", url=receiver.url())).secret
        job = refresh_to_end(stub)
        assert job.state == job_pb2.JOB_STATE_DONE, mesh.logs()

        [post] = receiver.wait_for(1)

    expected = hmac.new(secret.encode(), post.body, hashlib.sha256).hexdigest()
    assert post.headers["x-contextmesh-signature-256"] == f"sha256={expected}"
    assert post.headers["x-contextmesh-delivery"] == f"notify:{job.id}"
    summary = json.loads(post.body)
    assert (summary["jobId"], summary["user"], summary["state"]) == (
        job.id,
        "alice",
        "JOB_STATE_DONE",
    )
    assert (summary["total"], summary["synced"]) == (12, 12)
    assert summary["bundleHash"] == job.bundle.content_hash
    assert summary["training"]["state"] == "TRAINING_STATE_DISABLED"


def test_a_failing_callback_is_retried_parked_and_redriven(
    mesh: Mesh, stub: bundle_service_pb2_grpc.BundleServiceStub
) -> None:
    mesh.env["CONTEXTMESH_NOTIFY_RETRY_BACKOFF_S"] = "0.3,0.3"  # three attempts, quickly
    start(mesh)
    with CallbackServer(statuses=[500, 500, 500, 204]) as receiver:
        stub.SetCallback(pb.SetCallbackRequest(user="alice", url=receiver.url()))
        job = refresh_to_end(stub)
        posts = receiver.wait_for(3)

        with mesh.channel(target=mesh.admin_target) as channel:
            ops_stub = ops_service_pb2_grpc.OpsServiceStub(channel)
            parked = _parked(ops_stub, job.id)
            assert parked.subject == "contextmesh.notify" and parked.deliveries == 3
            assert "answered 500" in parked.reason
            redriven = ops_stub.RedriveDeadLetter(
                ops.RedriveDeadLetterRequest(sequence=parked.sequence)
            )
            again = ops_stub.RedriveDeadLetter(
                ops.RedriveDeadLetterRequest(sequence=parked.sequence)
            )
        assert redriven.job.id == again.job.id == job.id  # no job starts; the same one reported
        delivered = receiver.wait_for(4)[3]

    assert {p.headers["x-contextmesh-delivery"] for p in posts[:3]} == {f"notify:{job.id}"}
    assert delivered.headers["x-contextmesh-delivery"] == (
        f"notify:{job.id}:redrive:{parked.sequence}"
    )
    assert json.loads(delivered.body)["jobId"] == job.id


def _parked(ops_stub: ops_service_pb2_grpc.OpsServiceStub, job_id: str) -> ops.ParkedTask:
    """The job's parked notification, once the worker has parked it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tasks = ops_stub.ListDeadLetters(ops.ListDeadLettersRequest()).tasks
        found = [t for t in tasks if t.job_id == job_id]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no dead letter for job {job_id}")
