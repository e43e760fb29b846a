"""RefreshBundle coalesces onto a job only while it is still refreshing."""

from __future__ import annotations

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2

from meshkit.jobs import REFRESHING_STATES, TRAINING_STATES
from meshkit.topology import Buckets
from tests.gateway.conftest import Gateway

JobState = job_pb2.JobState


def moved_to(state: int):
    def mutate(record: job_record_pb2.JobRecord) -> bool:
        record.job.state = state  # type: ignore[assignment]
        return True

    return mutate


@pytest.mark.parametrize("state", sorted(REFRESHING_STATES))
async def test_a_refresh_joins_a_job_that_is_still_refreshing(
    gateway: Gateway, user: str, state: int
) -> None:
    first, coalesced = await gateway.refresher.refresh(user, force=False)
    assert not coalesced
    await gateway.jobs.update(first.id, moved_to(state))
    again, coalesced = await gateway.refresher.refresh(user, force=False)
    assert coalesced and again.id == first.id


@pytest.mark.parametrize("state", sorted(TRAINING_STATES))
async def test_a_job_that_is_only_training_never_absorbs_a_refresh(
    gateway: Gateway, user: str, state: int
) -> None:
    first, _ = await gateway.refresher.refresh(user, force=False)
    await gateway.jobs.update(first.id, moved_to(state))
    second, coalesced = await gateway.refresher.refresh(user, force=False)
    assert not coalesced and second.id != first.id
    assert second.state == JobState.JOB_STATE_QUEUED
    active = await gateway.js.key_value(Buckets.ACTIVE.name)
    assert (await active.get(user)).value == second.id.encode()
    # The training job goes on untouched: it ends on its own.
    record, _ = await gateway.jobs.get(first.id)
    assert record.job.state == state


async def test_force_starts_a_new_job_even_while_one_refreshes(gateway: Gateway, user: str) -> None:
    first, _ = await gateway.refresher.refresh(user, force=False)
    forced, coalesced = await gateway.refresher.refresh(user, force=True)
    assert not coalesced and forced.id != first.id and forced.force
