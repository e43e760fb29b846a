"""The gateway's job lifecycle in-process, against a real nats-server."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from nats.js import JetStreamContext

from gateway.redrive import Redriver
from gateway.refresh import Refresher
from meshkit.jobs import JobStore
from meshkit.topology import Buckets


@dataclass
class Gateway:
    js: JetStreamContext
    jobs: JobStore
    refresher: Refresher
    redriver: Redriver


async def open_gateway(js: JetStreamContext) -> Gateway:
    jobs = await JobStore.open(js)
    refresher = Refresher(js, jobs, await js.key_value(Buckets.ACTIVE.name))
    redriver = Redriver(js, jobs, refresher, await js.key_value(Buckets.REDRIVES.name))
    return Gateway(js, jobs, refresher, redriver)


@pytest.fixture
async def gateway(js: JetStreamContext) -> Gateway:
    return await open_gateway(js)


@pytest.fixture
def user() -> str:
    """A user of the test's own, so tests sharing the session's server never meet."""
    return f"u{uuid.uuid4().hex[:12]}"
