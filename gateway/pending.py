"""Refreshes that webhooks ask for: each delivery counted once, each burst of pushes one job.

**Once per delivery.** A delivery's X-GitHub-Delivery id is created, create-only, in
cm_deliveries (kept a day): GitHub redelivers under the same id, and a redelivered id starts
nothing. Should adding its refresh fail, the id is removed again so that the redelivery is
not lost.

**One job per burst.** cm_pending holds one PendingRefresh per user: the repositories pushed
to, and when the refresh starts (the first push plus CONTEXTMESH_WEBHOOK_DEBOUNCE_S). Every
webhook adds its names with compare-and-set. Every gateway fires the due entries with the
due-entry loop (gateway/due.py); the one whose compare-and-set delete of the entry lands
starts one job that re-syncs exactly those repositories (the others are carried over by
fingerprint as in any refresh). If a job of the user is still refreshing when the window
ends, the names are not coalesced into it, since it may have listed them already: the entry
is re-armed a window later instead. Like schedules, a refresh is started at most once: a
gateway that dies between its delete and the job costs that refresh; the next push, schedule
or refresh catches up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from contextmesh.webhook.v1 import pending_pb2
from google.protobuf import timestamp_pb2
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from gateway.due import DueEntries
from gateway.refresh import Refresher, new_record
from meshkit.config import WebhookSettings
from meshkit.domain.ids import new_job_id
from meshkit.errors import ConflictError
from meshkit.topology import Buckets

__all__ = ["MAX_RESYNC", "PendingRefreshes"]

log = logging.getLogger(__name__)

MAX_RESYNC = 1000
"""The most repositories one discover task names (DiscoverTask.resync); a burst that pushes
to more refreshes the user with force instead."""
_WRONG_LAST_SEQUENCE = frozenset({10071, 10164})


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def _due_at(value: bytes) -> float:
    return _seconds(pending_pb2.PendingRefresh.FromString(value).due_time)


class PendingRefreshes:
    """Takes webhook deliveries in, and starts their refreshes when they come due."""

    def __init__(
        self,
        deliveries: KeyValue,
        pending: KeyValue,
        refresher: Refresher,
        *,
        debounce_s: float,
        clock: Callable[[], float] = time.time,
        idle_s: float = 30.0,
    ) -> None:
        self.deliveries = deliveries
        self.pending = pending
        self.refresher = refresher
        self.debounce_s = debounce_s
        self.clock = clock
        self.due = DueEntries(pending, _due_at, self.fire, clock=clock, idle_s=idle_s)

    @classmethod
    async def open(
        cls, js: JetStreamContext, refresher: Refresher, settings: WebhookSettings
    ) -> PendingRefreshes:
        return cls(
            await js.key_value(Buckets.DELIVERIES.name),
            await js.key_value(Buckets.PENDING.name),
            refresher,
            debounce_s=settings.debounce_s,
        )

    async def accept(self, delivery_id: str, user: str, resync: Sequence[str]) -> bool:
        """Add a delivery's refresh of `user`; False, adding nothing, when the delivery id was
        received before."""
        try:
            await self.deliveries.create(delivery_id, b"")
        except KeyWrongLastSequenceError:
            return False
        try:
            await self.add(user, resync)
        except BaseException:
            await self.deliveries.delete(delivery_id)  # a redelivery may try again
            raise
        return True

    async def add(
        self, user: str, resync: Sequence[str], *, force: bool = False, due: float | None = None
    ) -> pending_pb2.PendingRefresh:
        """Merge repositories into the user's pending refresh, creating it due a window from
        now (or at `due`); an existing entry keeps its due time."""
        for _ in range(20):
            now = self.clock()
            found = await self._get(user)
            if found is None:
                pending, revision = pending_pb2.PendingRefresh(user=user), None
                pending.first_time.FromNanoseconds(int(now * 1e9))
                starts = now + self.debounce_s if due is None else due
                pending.due_time.FromNanoseconds(int(starts * 1e9))
            else:
                pending, revision = found
            _merge(pending, resync, force=force)
            data = pending.SerializeToString(deterministic=True)
            try:
                if revision is None:
                    await self.pending.create(user, data)
                else:
                    await self.pending.update(user, data, last=revision)
            except KeyWrongLastSequenceError:
                continue  # another webhook (or a firing) moved it: merge into the new one
            return pending
        raise ConflictError(f"too many concurrent webhooks for {user!r}; GitHub will retry")

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due pending refreshes until stop is set."""
        await self.due.run(stop)

    async def fire(self, user: str) -> str | None:
        """Start the user's pending refresh if it is due and this gateway wins it: the id of
        the job it started, else None."""
        found = await self._get(user)
        if found is None:
            return None
        pending, revision = found
        now = self.clock()
        if _seconds(pending.due_time) > now:
            return None  # re-armed, or not due yet
        if not await self._claim(user, revision):
            return None  # another gateway fired it, or a push was added: look again
        record = new_record(new_job_id(), user, force=pending.force)
        record.job.resync.extend(pending.resync)
        try:
            job = await self.refresher.start_unless_refreshing(record)
        except Exception:
            await self.add(user, pending.resync, force=pending.force, due=now + self.debounce_s)
            raise
        if job is None:
            # The running job may have listed the pushed repositories already: a job of
            # their own follows it.
            await self.add(user, pending.resync, force=pending.force, due=now + self.debounce_s)
            log.info("webhook refresh of %s waits: a job of the user is still refreshing", user)
            return None
        log.info(
            "webhook refresh of %s started job %s, re-syncing %d repositories",
            user,
            job.id,
            len(pending.resync),
            extra={"job_id": job.id},
        )
        return job.id

    async def _get(self, user: str) -> tuple[pending_pb2.PendingRefresh, int] | None:
        try:
            entry = await self.pending.get(user)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return pending_pb2.PendingRefresh.FromString(entry.value), entry.revision or 0

    async def _claim(self, user: str, revision: int) -> bool:
        """Delete the entry if it is still at `revision`: of several gateways, one wins."""
        try:
            await self.pending.delete(user, last=revision)
        except APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                return False
            raise
        return True


def _merge(pending: pending_pb2.PendingRefresh, resync: Sequence[str], *, force: bool) -> None:
    """Add repositories (each once, whatever its case); past MAX_RESYNC, force instead."""
    if force or pending.force:
        pending.force = True
        del pending.resync[:]
        return
    known = {name.lower() for name in pending.resync}
    for name in resync:
        if name.lower() not in known:
            known.add(name.lower())
            pending.resync.append(name)
    if len(pending.resync) > MAX_RESYNC:
        pending.force = True
        del pending.resync[:]
