"""Coalescing under races, on a real nats-server: concurrent refreshes of one user agree on one
job and list no other, and a refresh that finds the pointer a moment before its job's record
waits for the record instead of starting a second job.

Written against mutants tools/mutation.py found surviving in gateway/refresh.py
(docs/testing.md).
"""

from __future__ import annotations

import asyncio

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2

from gateway.refresh import new_record
from meshkit.domain.ids import new_job_id
from meshkit.errors import JobNotFoundError
from meshkit.topology import Buckets
from tests.gateway.conftest import Gateway


async def test_racing_refreshes_of_one_user_agree_on_one_job_and_record_only_it(
    gateway: Gateway, user: str
) -> None:
    answers = await asyncio.gather(
        *(gateway.refresher.refresh(user, force=False) for _ in range(8))
    )

    assert len({job.id for job, _ in answers}) == 1
    assert sorted(coalesced for _, coalesced in answers) == [False] + [True] * 7
    # ListJobs shows that job alone: the records of the refreshes that lost are gone.
    listed, _ = await gateway.refresher.history.page(user)
    assert [job.id for job in listed] == [answers[0][0].id]


async def test_a_refresh_waits_a_moment_for_the_record_of_the_job_the_pointer_names(
    gateway: Gateway, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pointer's writer stores the record at the same time as the pointer: this refresh
    # finds the pointer, and the record only 30 ms after it first looks for it.
    running = new_record(new_job_id(), user)
    await gateway.refresher.record(running)
    active = await gateway.js.key_value(Buckets.ACTIVE.name)
    await active.create(user, running.job.id.encode())
    loop = asyncio.get_running_loop()
    get = gateway.jobs.get
    readable_at: float | None = None

    async def readable_30_ms_after_the_first_read(
        job_id: str,
    ) -> tuple[job_record_pb2.JobRecord, int]:
        nonlocal readable_at
        if job_id == running.job.id:
            if readable_at is None:
                readable_at = loop.time() + 0.03
            if loop.time() < readable_at:
                raise JobNotFoundError(job_id)
        return await get(job_id)

    monkeypatch.setattr(gateway.jobs, "get", readable_30_ms_after_the_first_read)
    job, coalesced = await gateway.refresher.refresh(user, force=False)

    assert coalesced and job.id == running.job.id
    assert job.state == job_pb2.JOB_STATE_QUEUED
