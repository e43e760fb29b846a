"""A nats-server of one test directory's own, for a mesh of real services its tests share.

A conftest imports `directory_nats` (the fixture `mesh_nats`) and runs its mesh on it: the
mesh's workers take every task on their streams and its gateway sweeps every job, so the
server is the directory's alone. It stops after the directory's last test (pytest builds it
again should a random order come back to the directory later).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshctl.nats_server import NatsServer

__all__ = ["directory_nats"]


@pytest.fixture(scope="package", name="mesh_nats")
def directory_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("mesh-nats"))
    server.start()
    yield server
    server.stop()
