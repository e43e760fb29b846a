"""ListJobs' history: a user's jobs, newest first, paged (AIP-158), and no one else's."""

from __future__ import annotations

import asyncio

import pytest

from meshkit.errors import JobNotFoundError
from meshkit.rpc import InvalidArgument
from tests.gateway.conftest import Gateway


async def start_jobs(gateway: Gateway, user: str, count: int) -> list[str]:
    """count jobs of user (forced, so none coalesces), oldest first."""
    return [(await gateway.refresher.refresh(user, force=True))[0].id for _ in range(count)]


async def test_pages_walk_every_job_newest_first_exactly_once(gateway: Gateway, user: str) -> None:
    started = await start_jobs(gateway, user, 50)
    other = await start_jobs(gateway, f"{user}x", 3)
    history = gateway.refresher.history

    seen, sizes, token = [], [], ""
    while True:
        jobs, token = await history.page(user, 20, token)
        sizes.append(len(jobs))
        seen += [job.id for job in jobs]
        assert all(job.user == user for job in jobs)
        if not token:
            break

    assert sizes == [20, 20, 10]
    assert seen == started[::-1]
    assert not set(other) & set(seen)


async def test_a_job_started_between_pages_neither_repeats_nor_shifts_a_page(
    gateway: Gateway, user: str
) -> None:
    started = await start_jobs(gateway, user, 5)
    first, token = await gateway.refresher.history.page(user, 3)
    newer = await start_jobs(gateway, user, 1)
    second, token = await gateway.refresher.history.page(user, 3, token)

    assert [j.id for j in first + second] == started[::-1]
    assert not token
    listed, _ = await gateway.refresher.history.page(user, 1)
    assert [j.id for j in listed] == newer


@pytest.mark.parametrize(("asked", "served"), [(0, 20), (7, 7), (500, 100)])
async def test_page_size_defaults_to_20_and_is_capped_at_100(
    gateway: Gateway, user: str, asked: int, served: int
) -> None:
    await start_jobs(gateway, user, 101)
    jobs, token = await gateway.refresher.history.page(user, asked)
    assert len(jobs) == served and token


async def test_a_user_without_jobs_gets_an_empty_last_page(gateway: Gateway, user: str) -> None:
    assert await gateway.refresher.history.page(user) == ([], "")


@pytest.mark.parametrize("token", ["garbage!", "QUJD", "x" * 40])
async def test_a_token_this_api_never_returned_is_invalid_argument(
    gateway: Gateway, user: str, token: str
) -> None:
    await start_jobs(gateway, user, 1)
    with pytest.raises(InvalidArgument, match="next_page_token"):
        await gateway.refresher.history.page(user, 10, token)


async def test_a_job_whose_record_expired_is_left_out(gateway: Gateway, user: str) -> None:
    kept, gone = await start_jobs(gateway, user, 2)
    await gateway.jobs.kv.delete(gone)  # as the record's TTL would
    with pytest.raises(JobNotFoundError):
        await gateway.jobs.get(gone)

    jobs, _ = await gateway.refresher.history.page(user)
    assert [job.id for job in jobs] == [kept]


async def test_a_job_whose_claim_lost_the_race_is_not_listed(gateway: Gateway, user: str) -> None:
    # Concurrent refreshes of one user: the losers' records are deleted, and so must their
    # history entries be, or ListJobs would list jobs that never ran.
    results = await asyncio.gather(
        *(gateway.refresher.refresh(user, force=False) for _ in range(8))
    )
    ran = {job.id for job, _ in results}
    assert len(ran) == 1
    # A page of one holds the one job and says it is the last: no stale entry behind it.
    jobs, token = await gateway.refresher.history.page(user, 1)
    assert ({job.id for job in jobs}, token) == (ran, "")
