"""Firing schedules: each due schedule starts one refresh, however many gateways run.

Every gateway follows cm_schedules with the due-entry loop (gateway/due.py: a KV watch and
a heap of each user's next due time). When one comes due, the gateway
reads the schedule again and moves its next run an interval on with compare-and-set: of
several gateways, the one whose write lands starts the refresh; the others see a newer
revision and start nothing. A gateway that dies between the write and the refresh costs
that one run, never a duplicate: runs are at most once per slot.

A run that comes due while a job of the user is running (any state short of final,
training included) starts nothing; the next run is an interval later. Runs missed while
no gateway ran collapse into one, as soon as a gateway is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from contextmesh.schedule.v1 import schedule_pb2
from nats.js.errors import KeyWrongLastSequenceError

from gateway.due import DueEntries
from gateway.refresh import Refresher
from gateway.schedules import ScheduleNotFoundError, ScheduleStore, interval_seconds, next_run

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)


def _next_run(value: bytes) -> float:
    return float(schedule_pb2.Schedule.FromString(value).next_run_time.seconds)


class Scheduler:
    """Starts a refresh for each schedule that comes due."""

    def __init__(
        self,
        store: ScheduleStore,
        refresher: Refresher,
        *,
        clock: Callable[[], float] = time.time,
        idle_s: float = 30.0,
    ) -> None:
        self.store = store
        self.refresher = refresher
        self.clock = clock
        self.due = DueEntries(store.kv, _next_run, self.fire, clock=clock, idle_s=idle_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due schedules until stop is set."""
        await self.due.run(stop)

    async def fire(self, user: str) -> str | None:
        """Run the user's schedule if it is due and this gateway wins its run: the id of the
        job it started or joined, else None."""
        try:
            schedule, revision = await self.store.get(user)
        except ScheduleNotFoundError:
            return None
        now = self.clock()
        if schedule.next_run_time.seconds > now:
            return None  # another gateway ran it, or it was set again
        running = await self.refresher.running(user)
        schedule.last_run_time.FromSeconds(int(now))
        schedule.update_time.FromSeconds(int(now))
        schedule.next_run_time.FromSeconds(next_run(user, interval_seconds(schedule), now))
        schedule.last_job_id = ""
        try:
            revision = await self._write(user, schedule, revision)
        except KeyWrongLastSequenceError:
            return None  # another gateway's write landed first: the run is its own
        if running is not None:
            log.info("scheduled refresh of %s skipped: job %s is running", user, running.id)
            return None
        job, _ = await self.refresher.refresh(user, force=False)
        schedule.last_job_id = job.id
        with contextlib.suppress(KeyWrongLastSequenceError):  # set again meanwhile: keep that
            await self._write(user, schedule, revision)
        log.info("scheduled refresh of %s started job %s", user, job.id, extra={"job_id": job.id})
        return job.id

    async def _write(self, user: str, schedule: schedule_pb2.Schedule, revision: int) -> int:
        data = schedule.SerializeToString(deterministic=True)
        written: int = await self.store.kv.update(user, data, last=revision)
        return written
