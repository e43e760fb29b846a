"""Schedules: due runs start one refresh however many gateways fire them, never while a job of
the user runs, survive a restart, and many users on one interval are spread over it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from contextmesh.job.v1 import job_pb2, job_record_pb2
from google.protobuf import duration_pb2

from gateway.refresh import Refresher
from gateway.scheduler import Scheduler
from gateway.schedules import ScheduleNotFoundError, next_run
from meshkit.jobs import FINAL_STATES
from tests.gateway.conftest import Gateway
from tests.support.polling import holds_throughout, until

HOUR = duration_pb2.Duration(seconds=3600)
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ended(record: job_record_pb2.JobRecord) -> bool:
    record.job.state = job_pb2.JOB_STATE_DONE
    return True


def moved_to(state: int) -> Callable[[job_record_pb2.JobRecord], bool]:
    def mutate(record: job_record_pb2.JobRecord) -> bool:
        record.job.state = state  # type: ignore[assignment]
        return True

    return mutate


@pytest.fixture
async def running(gateway: Gateway) -> AsyncIterator[Callable[[Scheduler], None]]:
    """Start schedulers' loops; they stop when the test ends."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(scheduler: Scheduler) -> None:
        tasks.append(asyncio.create_task(scheduler.run(stop)))

    yield start
    stop.set()
    await asyncio.gather(*tasks)


async def jobs_of(gateway: Gateway, user: str) -> list[job_pb2.Job]:
    return (await gateway.refresher.history.page(user, 100))[0]


def test_runs_keep_the_users_phase_and_come_strictly_after_now() -> None:
    first = next_run("octocat", 3600, T0)
    assert T0 < first <= T0 + 3600
    assert next_run("octocat", 3600, first) == first + 3600
    assert next_run("octocat", 3600, first - 0.5) == first
    assert next_run("octocat", 3600, T0 + 86400) % 3600 == first % 3600


def test_ten_thousand_users_on_one_interval_are_spread_over_it() -> None:
    per_second = Counter(next_run(f"user{i}", 3600, T0) for i in range(10_000))
    assert len(per_second) > 3000  # of 3600 possible seconds
    assert max(per_second.values()) <= 12  # ~2.8 a second on average


async def test_set_get_and_delete(gateway: Gateway, user: str) -> None:
    schedule = await gateway.schedules.set(user, HOUR, T0)
    assert schedule.next_run_time.seconds == next_run(user, 3600, T0)
    assert (await gateway.schedules.get(user))[0] == schedule

    again = await gateway.schedules.set(user, duration_pb2.Duration(seconds=7200), T0 + 10)
    assert again.create_time == schedule.create_time and again.interval.seconds == 7200

    await gateway.schedules.delete(user)
    await gateway.schedules.delete(user)  # deleting none is fine
    with pytest.raises(ScheduleNotFoundError, match="SetSchedule"):
        await gateway.schedules.get(user)


async def test_a_due_schedule_starts_one_refresh_across_three_gateways(
    gateway: Gateway, user: str, running: Callable[[Scheduler], None]
) -> None:
    clock = Clock()
    schedule = await gateway.schedules.set(user, HOUR, clock.now)
    for _ in range(3):
        running(Scheduler(gateway.schedules, gateway.refresher, clock=clock, idle_s=0.05))

    clock.now = schedule.next_run_time.seconds + 0.5

    async def started() -> bool:
        return len(await jobs_of(gateway, user)) > 0

    async def recorded() -> bool:
        return bool((await gateway.schedules.get(user))[0].last_job_id)

    async def one_job() -> bool:
        return len(await jobs_of(gateway, user)) == 1

    await until(started)
    await until(recorded)
    # Every gateway's loop polls every 50 ms: none of the other two starts a second job.
    await holds_throughout(one_job, 0.5)
    jobs = await jobs_of(gateway, user)
    stored, _ = await gateway.schedules.get(user)
    assert [job.id for job in jobs] == [stored.last_job_id]
    assert stored.next_run_time.seconds == schedule.next_run_time.seconds + 3600


@pytest.mark.parametrize(
    "state", [job_pb2.JOB_STATE_SYNCING, job_pb2.JOB_STATE_TRAINING], ids=["syncing", "training"]
)
async def test_a_run_that_comes_due_while_a_job_runs_starts_nothing(
    gateway: Gateway, user: str, state: int
) -> None:
    clock = Clock()
    job, _ = await gateway.refresher.refresh(user, force=False)
    await gateway.jobs.update(job.id, moved_to(state))
    schedule = await gateway.schedules.set(user, HOUR, clock.now)
    scheduler = Scheduler(gateway.schedules, gateway.refresher, clock=clock, idle_s=0.05)

    clock.now = schedule.next_run_time.seconds
    assert await scheduler.fire(user) is None

    assert [j.id for j in await jobs_of(gateway, user)] == [job.id]
    stored, _ = await gateway.schedules.get(user)
    assert stored.last_job_id == "" and stored.last_run_time.seconds == int(clock.now)
    # The next run, once the job has ended, starts a refresh.
    await gateway.jobs.update(job.id, ended)
    assert job_pb2.JOB_STATE_DONE in FINAL_STATES
    clock.now = stored.next_run_time.seconds
    started = await scheduler.fire(user)
    assert started is not None and started != job.id


async def test_a_schedule_not_due_yet_starts_nothing(gateway: Gateway, user: str) -> None:
    clock = Clock()
    schedule = await gateway.schedules.set(user, HOUR, clock.now)
    clock.now = schedule.next_run_time.seconds - 1
    assert (
        await Scheduler(gateway.schedules, gateway.refresher, clock=clock, idle_s=0.05).fire(user)
        is None
    )
    assert await jobs_of(gateway, user) == []


async def test_runs_missed_while_no_gateway_ran_collapse_into_one(
    gateway: Gateway, user: str, running: Callable[[Scheduler], None]
) -> None:
    clock = Clock()
    schedule = await gateway.schedules.set(user, HOUR, clock.now)
    # Five intervals pass with no gateway; then one starts (a restart: a new Scheduler over
    # the same bucket, knowing nothing but what cm_schedules holds).
    clock.now = schedule.next_run_time.seconds + 5 * 3600 + 1
    running(Scheduler(gateway.schedules, gateway.refresher, clock=clock, idle_s=0.05))

    async def started() -> bool:
        return len(await jobs_of(gateway, user)) > 0

    async def one_job() -> bool:
        return len(await jobs_of(gateway, user)) == 1

    await until(started)
    await holds_throughout(one_job, 0.3)
    stored, _ = await gateway.schedules.get(user)
    assert stored.next_run_time.seconds > clock.now


async def test_a_deleted_schedule_never_runs(
    gateway: Gateway, user: str, running: Callable[[Scheduler], None]
) -> None:
    clock = Clock()
    schedule = await gateway.schedules.set(user, HOUR, clock.now)
    scheduler = Scheduler(gateway.schedules, gateway.refresher, clock=clock, idle_s=0.05)
    running(scheduler)
    await gateway.schedules.delete(user)
    clock.now = schedule.next_run_time.seconds + 1
    assert await scheduler.fire(user) is None

    async def no_job() -> bool:
        return await jobs_of(gateway, user) == []

    await holds_throughout(no_job, 0.3)


async def test_gateways_racing_for_one_run_start_one_job_even_if_it_ends_at_once(
    gateway: Gateway, user: str
) -> None:
    # Coalescing alone would hide a double run while the first job still refreshes: here
    # each job ends as soon as it starts, so only the claim on the schedule keeps it to one.
    class EndsAtOnce(Refresher):
        async def refresh(self, user: str, *, force: bool) -> tuple[job_pb2.Job, bool]:
            job, coalesced = await super().refresh(user, force=force)
            await self.jobs.update(job.id, ended)
            return job, coalesced

    refresher = EndsAtOnce(
        gateway.js, gateway.jobs, gateway.refresher.active, gateway.refresher.history
    )
    clock = Clock()
    schedule = await gateway.schedules.set(user, HOUR, clock.now)
    clock.now = schedule.next_run_time.seconds
    schedulers = [Scheduler(gateway.schedules, refresher, clock=clock) for _ in range(4)]

    started = await asyncio.gather(*(s.fire(user) for s in schedulers))

    assert len([job for job in started if job]) == 1
    assert len(await jobs_of(gateway, user)) == 1


async def test_the_loop_wakes_for_a_change_and_for_a_stop_not_after_its_idle_time(
    gateway: Gateway, user: str
) -> None:
    # Asleep with nothing due, the loop would otherwise wait out its idle time (an hour
    # here); a schedule set meanwhile, or the gateway stopping, must wake it.
    clock = Clock()
    scheduler = Scheduler(gateway.schedules, gateway.refresher, clock=clock, idle_s=3600.0)
    stop = asyncio.Event()
    loop = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(0.2)  # asleep now, nothing due
    await gateway.schedules.set(user, HOUR, clock.now - 3600)  # due at once

    async def started() -> bool:
        return len(await jobs_of(gateway, user)) == 1

    await until(started, 10.0)
    stop.set()
    async with asyncio.timeout(10.0):
        await loop
