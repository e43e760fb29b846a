"""The REST and grpcurl tests of tests/rest, pointed at the real services.

tests/rest runs them against a stub gateway that a test can steer; here the same test
functions run against the real gateway, sync, merge and search processes on a real
nats-server, behind real Envoy. They ask only for the fixtures below.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from meshkit.nats_server import NatsServer
from meshkit.topology import DEADLETTER, SYNC
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
    """The last of two tasks the sync worker parks at once: they break the contract's rules.
    (Two, because the paging test reads pages of one.)"""
    for _ in range(2):
        msg_id = f"poison-{uuid.uuid4().hex[:8]}"
        bad = task_pb2.TaskMeta(job_id="not-a-job-id", task_id=msg_id)
        await js.publish(SYNC.subject, bad.SerializeToString(), headers={"Nats-Msg-Id": msg_id})
    async with asyncio.timeout(30):
        while True:
            info = await js.stream_info(DEADLETTER)
            for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
                try:
                    stored = await js.get_msg(DEADLETTER, seq)
                except NotFoundError:
                    continue  # redriven
                letter = task_pb2.DeadLetter()
                letter.ParseFromString(stored.data or b"")
                if letter.msg_id == msg_id:
                    return seq
            await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    from meshkit.config import NatsSettings
    from meshkit.nats_client import connect

    nc, js = await connect(NatsSettings(url=nats_server.url), name="rest-gateway-tests")
    yield js
    await nc.drain()
