"""A refresh on a three-server JetStream cluster survives losing a server mid-refresh (issue 14).

What k8s/ deploys, with real processes: three nats-servers in one cluster, every stream and
bucket R3, and the services each connected to a different server (they learn the others from
the cluster and fail over). One server is SIGKILLed while the job syncs, the SYNC stream's
leader (found through the server's monitoring endpoint) or a follower, and started again
later: the job still completes with every repository counted once, one merge and one move
of the user's bundle pointer.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2 as pb
from contextmesh.gateway.v1 import bundle_service_pb2_grpc
from contextmesh.job.v1 import job_pb2

from meshctl.nats_server import NatsCluster, NatsServer
from tests.e2e.checks import job_record
from tests.e2e.conftest import REPOS, big_source_env
from tests.support.mesh import Mesh

pytestmark = pytest.mark.slow

JobState = job_pb2.JobState


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster", n=3, name="faults")
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.kill()


def stream_leader(node: NatsServer, stream: str) -> str | None:
    """The server name leading `stream`, as `node`'s monitoring endpoint reports it."""
    assert node.monitor_url is not None
    with urllib.request.urlopen(f"{node.monitor_url}/jsz?accounts=true&streams=true") as reply:
        report = json.load(reply)
    for account in report.get("account_details") or []:
        for detail in account.get("stream_detail") or []:
            if detail.get("name") == stream:
                leader: str | None = (detail.get("cluster") or {}).get("leader")
                return leader
    return None


@pytest.mark.parametrize("victim", ["the SYNC leader", "a follower"])
def test_a_refresh_survives_losing_a_server_mid_refresh(
    victim: str, cluster: NatsCluster, tmp_path: Path, big_source: Path
) -> None:
    urls = cluster.urls
    mesh = Mesh(
        urls[0],
        tmp_path,
        env={**big_source_env(big_source), "CONTEXTMESH_JS_REPLICAS": "3"},
    )
    try:
        mesh.start("gateway")  # declares the topology, R3, on the cluster
        mesh.start("syncsvc", name="sync-1", env={"CONTEXTMESH_NATS_URL": urls[1]})
        mesh.start("syncsvc", name="sync-2", env={"CONTEXTMESH_NATS_URL": urls[2]})
        mesh.start("mergesvc", env={"CONTEXTMESH_NATS_URL": urls[1]})
        with mesh.channel() as channel:
            stub = bundle_service_pb2_grpc.BundleServiceStub(channel)
            job_id = stub.RefreshBundle(pb.RefreshBundleRequest(user="bob")).job.id
            killed: NatsServer | None = None
            final = None
            for update in stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=240):
                done = update.job.synced + update.job.failed
                if killed is None and done >= 30:
                    assert done < REPOS, "the job finished before the kill; make it bigger"
                    leader = stream_leader(cluster.nodes[0], "SYNC")
                    names = [f"n{i + 1}" for i in range(3)]
                    assert leader in names, leader
                    if victim == "a follower":
                        # Not the gateway's server either: its watch would have to move.
                        leader = next(n for n in names[1:] if n != leader)
                    killed = cluster.nodes[names.index(leader)]
                    killed.kill()
                if killed is not None and not killed.running and done >= 120:
                    killed.start(20)  # back on the same store: it catches up
                final = update
            assert killed is not None and final is not None
            assert final.final and final.job.state == JobState.JOB_STATE_DONE, mesh.logs()
            assert (final.job.total, final.job.synced, final.job.failed) == (REPOS, REPOS, 0)

        record, pointer_writes = asyncio.run(job_record(",".join(urls), job_id))
        assert record.merges == 1
        assert sum(bin(b).count("1") for b in record.counted) == REPOS
        assert pointer_writes == 1
    finally:
        mesh.stop_all()
