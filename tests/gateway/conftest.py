"""The gateway's job lifecycle in-process, against a real nats-server of each test's own:
its work streams then hold only the tasks that test published."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from gateway.forget import Forgetter
from gateway.redrive import Redriver
from gateway.refresh import Refresher
from gateway.schedules import ScheduleStore
from meshctl.nats_server import NatsServer
from meshkit.blob import BlobStore, FilesystemBlobStore
from meshkit.config import NatsSettings
from meshkit.domain.callbacks import CallbackStore
from meshkit.jobs import JobStore
from meshkit.nats_client import connect
from meshkit.topology import Buckets, declare


@dataclass
class Gateway:
    js: JetStreamContext
    jobs: JobStore
    refresher: Refresher
    redriver: Redriver
    schedules: ScheduleStore
    callbacks: CallbackStore
    blobs: BlobStore
    forgetter: Forgetter


async def open_gateway(js: JetStreamContext, blobs: BlobStore) -> Gateway:
    jobs = await JobStore.open(js)
    refresher = await Refresher.open(js, jobs)
    redriver = Redriver(js, jobs, refresher, await js.key_value(Buckets.REDRIVES.name))
    return Gateway(
        js,
        jobs,
        refresher,
        redriver,
        await ScheduleStore.open(js),
        await CallbackStore.open(js),
        blobs,
        await Forgetter.open(js, refresher.history, blobs),
    )


@pytest.fixture
async def connection(fresh_nats: NatsServer) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """Overrides the root conftest's: `nc` and `js` here reach the test's own server."""
    nc, js = await connect(NatsSettings(url=fresh_nats.url), name="gateway-tests")
    await declare(js)
    yield nc, js
    await nc.drain()


@pytest.fixture
async def gateway(js: JetStreamContext, tmp_path: Path) -> Gateway:
    return await open_gateway(js, FilesystemBlobStore(tmp_path / "blobs"))


@pytest.fixture
def user() -> str:
    """A user of the test's own, so that no two tests' jobs ever meet."""
    return f"u{uuid.uuid4().hex[:12]}"
