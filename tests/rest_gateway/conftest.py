"""The REST and grpcurl tests of tests/rest, pointed at the real services.

tests/rest runs them against a stub gateway that a test can steer; here the same test
functions run against the real gateway, sync, merge and search processes on a real
nats-server, behind real Envoy. They ask only for the fixtures below.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext

from meshkit.ids import new_job_id, sync_msg_id
from meshkit.nats_server import NatsServer
from meshkit.topology import SYNC
from meshkit.worker import park
from tests.support.mesh import Mesh
from tests.support.rest_fixtures import proxy, rest  # noqa: F401 - shared fixtures


@pytest.fixture(scope="session")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("source")


@pytest.fixture(scope="session")
def gateway_mesh(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory, source_root: Path
) -> Iterator[Mesh]:
    mesh = Mesh(
        nats_server.url,
        tmp_path_factory.mktemp("mesh"),
        env={
            "CONTEXTMESH_SOURCE": "local",
            "CONTEXTMESH_LOCAL_SOURCE_DIR": str(source_root),
        },
    )
    try:
        mesh.start("gateway")
        mesh.start("syncsvc")
        mesh.start("mergesvc")
        mesh.start("searchsvc")
        mesh.wait_serving(f"127.0.0.1:{mesh.search_port}", "searchsvc", timeout=120)
        yield mesh
    finally:
        mesh.stop_all()


@pytest.fixture(scope="session")
def grpc_target(gateway_mesh: Mesh) -> str:
    return gateway_mesh.gateway_target


@pytest.fixture
def user(source_root: Path) -> str:
    """A user of its own with two Python repositories in the local source."""
    name = f"u-{uuid.uuid4().hex[:12]}"
    for repo, topic in (("search-api", "search in python"), ("python-tools", "python tooling")):
        folder = source_root / name / repo
        folder.mkdir(parents=True)
        (folder / ".repo-context.json").write_text(
            json.dumps(
                {
                    "project_identity": {"name": repo, "description": f"{topic} for {name}"},
                    "tech_stack": {"primary": ["Python"]},
                }
            )
        )
        (folder / "README.md").write_text(f"# {repo}\n\n{topic}.\n")
    return name


@pytest.fixture(scope="session")
async def parked_sequence(gateway_mesh: Mesh, js: JetStreamContext) -> int:
    """The last of two sync tasks parked as a worker parks one after its last delivery.
    (Two, because the paging test reads pages of one.) Redriving one refreshes its user."""
    seq = 0
    for index in range(2):
        job_id = new_job_id()
        task = sync_tasks.SyncRepoTask(
            meta=task_pb2.TaskMeta(job_id=job_id, task_id=sync_msg_id(job_id, index)),
            user="u-parked",
            repository="u-parked/broken",
            index=index,
        )
        seq = await park(
            js,
            SYNC,
            payload=task.SerializeToString(),
            stream_seq=random.randrange(1 << 40),
            msg_id=task.meta.task_id,
            job_id=job_id,
            reason="RuntimeError: the blob store was down",
            deliveries=SYNC.max_deliver,
        )
    return seq


@pytest.fixture(scope="session")
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    from meshkit.config import NatsSettings
    from meshkit.nats_client import connect

    nc, js = await connect(NatsSettings(url=nats_server.url), name="rest-gateway-tests")
    yield js
    await nc.drain()
