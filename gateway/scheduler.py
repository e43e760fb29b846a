"""Firing schedules: each due schedule starts one refresh, however many gateways run.

Every gateway follows cm_schedules through a KV watch (its current entries, then every
change) and keeps the next due time of each user in a heap. When one comes due, the gateway
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
import heapq
import logging
import time
from collections.abc import Callable

from contextmesh.schedule.v1 import schedule_pb2
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from gateway.refresh import Refresher
from gateway.schedules import ScheduleNotFoundError, ScheduleStore, interval_seconds, next_run
from meshkit.jobs import stop_watcher

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

_RETRY_S = 5
"""How soon a run that failed (NATS unreachable, say) is tried again."""


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
        self.idle_s = idle_s
        """The longest the loop sleeps: it wakes sooner when a run comes due or any
        schedule changes."""
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._changed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due schedules until stop is set."""
        watcher = await self.store.kv.watchall()
        follow = asyncio.create_task(self._follow(watcher))
        try:
            while not stop.is_set():
                for user in self._pop_due():
                    try:
                        await self.fire(user)
                    except Exception:  # one user's failure never stops the others' runs
                        log.exception("scheduled refresh of %s failed; trying again", user)
                        self._at(user, int(self.clock()) + _RETRY_S)
                await self._sleep(stop)
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            await stop_watcher(watcher)

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

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        """Keep the due times in step with cm_schedules."""
        while True:
            entry = await watcher.updates(timeout=None)
            if entry is None:  # the end of the entries that existed when the watch began
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self._due.pop(entry.key, None)
            else:
                schedule = schedule_pb2.Schedule.FromString(entry.value)
                self._at(entry.key, schedule.next_run_time.seconds)
            self._changed.set()

    def _at(self, user: str, seconds: int) -> None:
        self._due[user] = seconds
        heapq.heappush(self._heap, (seconds, user))

    def _pop_due(self) -> list[str]:
        """Users whose schedule is due now (heap entries made stale by a later write are
        dropped as they surface)."""
        now = self.clock()
        due = []
        while self._heap and self._heap[0][0] <= now:
            at, user = heapq.heappop(self._heap)
            if self._due.get(user) == at:
                due.append(user)
        return due

    async def _sleep(self, stop: asyncio.Event) -> None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        wait = self.idle_s
        if self._heap:
            wait = min(wait, max(0.0, self._heap[0][0] - self.clock()))
        self._changed.clear()
        changed = asyncio.ensure_future(self._changed.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({changed, stopped}, timeout=wait)
        finally:
            changed.cancel()
            stopped.cancel()
