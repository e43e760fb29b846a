"""The REST and grpcurl tests of tests/rest, pointed at the real services.

tests/rest runs them against a stub gateway that a test can steer; here the same test
functions run against the real gateway, sync, merge and search processes on a real
nats-server, behind real Envoy. They ask only for the fixtures below.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.nats_server import NatsServer
from meshkit.signing import LocalSigner
from tests.rest.test_routes import WEBHOOK_SECRET
from tests.support.mesh import Mesh
from tests.support.mesh_nats import directory_nats  # noqa: F401 - the mesh's own server
from tests.support.rest_fixtures import proxy, rest  # noqa: F401 - shared fixtures


@pytest.fixture(scope="package")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("source")


@pytest.fixture(scope="package")
def gateway_mesh(
    mesh_nats: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
    source_root: Path,
    signer: LocalSigner,
) -> Iterator[Mesh]:
    mesh = Mesh(
        mesh_nats.url,
        tmp_path_factory.mktemp("mesh"),
        env={
            "CONTEXTMESH_SOURCE": "local",
            "CONTEXTMESH_LOCAL_SOURCE_DIR": str(source_root),
            "CONTEXTMESH_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
        signer=signer,  # the session's: the shared `rest` client sends its admin token
    )
    try:
        mesh.start("gateway")
        mesh.start("syncsvc")
        mesh.start("mergesvc")
        mesh.start("searchsvc")
        mesh.wait_serving(
            f"127.0.0.1:{mesh.search_port}",
            "searchsvc",
            timeout=180,
            service="contextmesh.search.v1.SearchService",
        )
        yield mesh
    finally:
        mesh.stop_all()


@pytest.fixture(scope="package")
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
