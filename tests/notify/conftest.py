"""notifysvc in-process, against a real nats-server of each test's own (no other worker
drains its NOTIFY stream), and a real HTTP receiver on loopback."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from nats.aio.client import Client
from nats.js import JetStreamContext

from meshctl.nats_server import NatsServer
from meshkit.config import NatsSettings, StreamTiming
from meshkit.domain.callbacks import CallbackStore
from meshkit.jobs import JobStore
from meshkit.nats_client import connect
from meshkit.topology import declare
from tests.support.callback_server import CallbackServer

TIMING = {"NOTIFY": StreamTiming(retry_backoff_s=(0.2, 0.2))}
"""Three attempts, 0.2 s apart: a failing receiver's task is parked within a second."""


@pytest.fixture
async def connection(fresh_nats: NatsServer) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """Overrides the root conftest's: `nc` and `js` here reach the test's own server."""
    nc, js = await connect(NatsSettings(url=fresh_nats.url), name="notify-tests")
    await declare(js, timing=TIMING)
    yield nc, js
    await nc.drain()


@pytest.fixture
async def jobs(js: JetStreamContext) -> JobStore:
    return await JobStore.open(js)


@pytest.fixture
async def callbacks(js: JetStreamContext) -> CallbackStore:
    return await CallbackStore.open(js)


@pytest.fixture
def user() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


@pytest.fixture
def receiver() -> Iterator[CallbackServer]:
    with CallbackServer() as server:
        yield server


def done_job(job_id: str, user: str) -> job_record_pb2.JobRecord:
    """A job that ended DONE with its bundle and a published model."""
    record = job_record_pb2.JobRecord()
    job = record.job
    job.id, job.user, job.state = job_id, user, job_pb2.JOB_STATE_DONE
    job.total, job.synced, job.unchanged, job.failed = 5, 3, 1, 1
    job.bundle.content_hash = "ab" * 32
    job.bundle.blob_key = f"bundles/{user}/{'ab' * 32}.json"
    job.training.state = job_pb2.TRAINING_STATE_PUBLISHED
    job.create_time.FromSeconds(1_800_000_000)
    job.end_time.FromSeconds(1_800_000_090)
    return record
