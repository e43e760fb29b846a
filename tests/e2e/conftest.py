"""End-to-end fixtures: the services as separate processes over one nats-server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from contextmesh.gateway.v1 import bundle_service_pb2_grpc

from meshctl.nats_server import NatsServer
from tests.support.mesh import Mesh


def write_repo(
    root: Path,
    user: str,
    name: str,
    *,
    description: str,
    tech: list[str],
    readme: str | None = None,
) -> Path:
    folder = root / user / name
    folder.mkdir(parents=True, exist_ok=True)
    context = {
        "project_identity": {
            "name": name,
            "type": "project",
            "scope": "backend",
            "description": description,
        },
        "tech_stack": {"primary": tech},
        "skill_manifest": {"technical": [f"{t} development" for t in tech]},
    }
    (folder / ".repo-context.json").write_text(json.dumps(context, indent=2))
    (folder / "README.md").write_text(readme or f"# {name}\n\n{description}\n")
    return folder


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    for i in range(12):
        write_repo(
            root,
            "alice",
            f"project-{i:02d}",
            description=f"Project number {i}",
            tech=["Python", f"lib{i}"],
        )
    return root


@pytest.fixture
def mesh(fresh_nats: NatsServer, tmp_path: Path, source_dir: Path) -> Iterator[Mesh]:
    m = Mesh(
        fresh_nats.url,
        tmp_path,
        env={
            "CONTEXTMESH_SOURCE": "local",
            "CONTEXTMESH_LOCAL_SOURCE_DIR": str(source_dir),
        },
    )
    try:
        yield m
    finally:
        m.stop_all()


@pytest.fixture
def stub(mesh: Mesh) -> Iterator[bundle_service_pb2_grpc.BundleServiceStub]:
    with mesh.channel() as channel:
        yield bundle_service_pb2_grpc.BundleServiceStub(channel)


REPOS = 400
"""Repositories of bob's in `big_source`: enough that a fault lands mid-job."""


@pytest.fixture
def big_source(tmp_path: Path) -> Path:
    root = tmp_path / "big"
    for i in range(REPOS):
        write_repo(root, "bob", f"repo-{i:03d}", description=f"Repository {i}", tech=["Go"])
    return root


def big_source_env(root: Path) -> dict[str, str]:
    """The services' settings for a fault test on `big_source`: the local source, and few
    repositories in flight per worker, so that a fault lands while most are still to do."""
    return {
        "CONTEXTMESH_SOURCE": "local",
        "CONTEXTMESH_LOCAL_SOURCE_DIR": str(root),
        "CONTEXTMESH_SYNC_CONCURRENCY": "4",
    }
