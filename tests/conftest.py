"""Fixtures shared by every test: a real nats-server with a temporary store, on a free port.

The chain is: temporary store dir -> nats-server on port 0 -> client -> JetStream context
with the whole topology declared. Nothing uses port 4222 or a preinstalled server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from meshctl.nats_server import NatsServer
from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from meshkit.signing import LocalSigner
from meshkit.topology import declare

# No test may reach a model hub (the model loads from an installed package).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server per test module, so that no module sees another's streams, jobs or
    services whatever order they run in; the module's tests isolate themselves by job and
    user ids."""
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own, for tests that kill or inspect it."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def connection(nats_server: NatsServer) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """A client of the module's server and its JetStream context, the topology declared."""
    nc, js = await connect(NatsSettings(url=nats_server.url), name="tests")
    await declare(js)
    yield nc, js
    await nc.drain()


@pytest.fixture
def nc(connection: tuple[Client, JetStreamContext]) -> Client:
    return connection[0]


@pytest.fixture
def js(connection: tuple[Client, JetStreamContext]) -> JetStreamContext:
    return connection[1]


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> LocalSigner:
    """A signing key for the session: services trust it (tests.support.auth.auth_env)."""
    return LocalSigner.open(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="session")
def admin_token(signer: LocalSigner) -> str:
    """May act for every user and use the admin plane, as `up`'s CLI token does."""
    return signer.mint(users=["*"], admin=True, ttl_s=86400)
