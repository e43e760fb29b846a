"""Refresh schedules: a user's bundle refreshed every interval, with no one pressing a button.

A schedule lives in cm_schedules under the user's name and says when it next comes due. Each
user's runs keep a phase of their own within the interval, taken from a hash of the name: ten
thousand users on a six-hour interval come due spread over the six hours, a few a second,
never all at once, and the phase survives restarts and re-setting (the same user always
lands on the same offset). The gateway's Scheduler (gateway/scheduler.py) fires them.
"""

from __future__ import annotations

import hashlib

from contextmesh.schedule.v1 import schedule_pb2
from google.protobuf import duration_pb2
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from meshkit.rpc import NotFound
from meshkit.topology import Buckets

__all__ = ["ScheduleNotFoundError", "ScheduleStore", "interval_seconds", "next_run"]


class ScheduleNotFoundError(NotFound):
    """The user has no schedule (NOT_FOUND)."""

    def __init__(self, user: str) -> None:
        super().__init__(f"user {user} has no schedule; set one with SetSchedule")


def _phase(user: str, interval_s: int) -> int:
    digest = hashlib.sha256(user.encode()).digest()
    return int.from_bytes(digest[:8], "big") % interval_s


def next_run(user: str, interval_s: int, now: float) -> int:
    """The first of the user's run times strictly after now (seconds since the epoch): the
    times phase + k * interval, phase being the user's own."""
    phase = _phase(user, interval_s)
    return phase + (int(now - phase) // interval_s + 1) * interval_s


def interval_seconds(schedule: schedule_pb2.Schedule) -> int:
    return max(1, schedule.interval.seconds)


class ScheduleStore:
    """Reads and writes schedules; every write says when the schedule next comes due."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> ScheduleStore:
        return cls(await js.key_value(Buckets.SCHEDULES.name))

    async def set(
        self, user: str, interval: duration_pb2.Duration, now: float
    ) -> schedule_pb2.Schedule:
        """Create or replace the user's schedule; its next run is the first after now."""
        try:
            schedule, _ = await self.get(user)
        except ScheduleNotFoundError:
            schedule = schedule_pb2.Schedule(user=user)
            schedule.create_time.FromSeconds(int(now))
        schedule.interval.CopyFrom(interval)
        schedule.next_run_time.FromSeconds(next_run(user, interval_seconds(schedule), now))
        schedule.update_time.FromSeconds(int(now))
        await self.kv.put(user, schedule.SerializeToString(deterministic=True))
        return schedule

    async def get(self, user: str) -> tuple[schedule_pb2.Schedule, int]:
        """The schedule and its revision; ScheduleNotFoundError when there is none."""
        try:
            entry = await self.kv.get(user)
        except KeyNotFoundError:
            raise ScheduleNotFoundError(user) from None
        if not entry.value:
            raise ScheduleNotFoundError(user)
        return schedule_pb2.Schedule.FromString(entry.value), entry.revision or 0

    async def delete(self, user: str) -> None:
        await self.kv.delete(user)
