"""A real gateway (with sync and merge workers) on a real nats-server, and Envoy in front.

alice and bob each own a repository in the local source; the tests call as anonymous, as
alice, as bob and as an admin.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.nats_server import NatsServer
from tests.support.envoy import RestProxy, rest_proxy
from tests.support.mesh import Mesh
from tests.support.mesh_nats import directory_nats  # noqa: F401 - the mesh's own server


@pytest.fixture(scope="package")
def edge_mesh(mesh_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    source = tmp_path_factory.mktemp("source")
    for user in ("alice", "bob"):
        folder = source / user / "notes"
        folder.mkdir(parents=True)
        context = {"project_identity": {"name": "notes", "description": f"{user}'s notes"}}
        (folder / ".repo-context.json").write_text(json.dumps(context))
    mesh = Mesh(
        mesh_nats.url,
        tmp_path_factory.mktemp("edge"),
        env={"CONTEXTMESH_SOURCE": "local", "CONTEXTMESH_LOCAL_SOURCE_DIR": str(source)},
    )
    try:
        mesh.start("gateway")
        mesh.start("syncsvc")
        mesh.start("mergesvc")
        yield mesh
    finally:
        mesh.stop_all()


@pytest.fixture(scope="package")
def edge_proxy(edge_mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestProxy]:
    with rest_proxy(edge_mesh.gateway_target, tmp_path_factory.mktemp("envoy")) as running:
        yield running


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")
