"""The job record: the single source of truth of a refresh job, in the cm_jobs KV bucket.

Every change is a compare-and-set on the record's revision: a mutation function is applied
to the latest record and written with `update(key, value, last=revision)`; on conflict it is
applied again to the newer record. Mutations must therefore be pure functions of the record
(no side effects), and must return False when they change nothing, so that a redelivered
task writes nothing.

Many sync tasks finish at once, so mutations of one job queued within a short window are
applied together in one write (`JobStore.apply`), which keeps compare-and-set conflicts and
watch traffic low at a thousand repositories a job.

The write that moves a record from a non-final state to a final one counts the job as
finished, with its duration (meshkit.metrics): compare-and-set lets exactly one write do
that, so a job counts once however many services race to end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

from contextmesh.job.v1 import job_pb2, job_record_pb2
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from meshkit import metrics
from meshkit.erasure import exists_now, read_now
from meshkit.errors import ConflictError, JobNotFoundError
from meshkit.job_errors import end_with_error
from meshkit.topology import Buckets

__all__ = [
    "FINAL_STATES",
    "REFRESHING_STATES",
    "TRAINING_STATES",
    "WATCH_INACTIVE_S",
    "JobStore",
    "Mutation",
    "bundle_is_ready",
    "is_final",
    "is_refreshing",
    "stop_watcher",
]

log = logging.getLogger(__name__)

JobState = job_pb2.JobState
FINAL_STATES = frozenset(
    {JobState.JOB_STATE_DONE, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED}
)

WATCH_INACTIVE_S = 10.0
"""How long the server keeps a KV watch's consumer once nobody listens: a watch that is not
stopped (its gateway crashed) leaves nothing behind for longer (nats-py's default is 5 min)."""

Mutation = Callable[[job_record_pb2.JobRecord], bool]
"""Changes a record in place; returns whether it changed anything."""


REFRESHING_STATES = frozenset(
    {
        JobState.JOB_STATE_QUEUED,
        JobState.JOB_STATE_DISCOVERING,
        JobState.JOB_STATE_SYNCING,
        JobState.JOB_STATE_MERGING,
    }
)
"""The states before the bundle is ready: the only ones a new refresh coalesces onto."""
TRAINING_STATES = frozenset({JobState.JOB_STATE_BUNDLE_READY, JobState.JOB_STATE_TRAINING})
"""The bundle is ready and only the training that follows it is left."""


def is_final(state: int) -> bool:
    return state in FINAL_STATES


def is_refreshing(state: int) -> bool:
    return state in REFRESHING_STATES


def bundle_is_ready(job: job_pb2.Job) -> bool:
    """The job's bundle is stored and the user's pointer moved to it."""
    return job.HasField("bundle_ready_time")


@dataclass
class _Pending:
    mutations: list[tuple[Mutation, asyncio.Future[job_record_pb2.JobRecord]]] = field(
        default_factory=list
    )


class JobStore:
    """Reads, creates, updates and watches job records."""

    def __init__(self, kv: KeyValue, js: JetStreamContext, *, max_attempts: int = 200) -> None:
        self.kv = kv
        self.js = js
        self.max_attempts = max_attempts
        self._pending: dict[str, _Pending] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    @classmethod
    async def open(cls, js: JetStreamContext) -> JobStore:
        return cls(await js.key_value(Buckets.JOBS.name), js)

    async def create(self, record: job_record_pb2.JobRecord) -> int:
        """Store a new record; the job id must be new. Returns its revision."""
        return await self.kv.create(record.job.id, record.SerializeToString(deterministic=True))

    async def get(self, job_id: str) -> tuple[job_record_pb2.JobRecord, int]:
        """The record and its revision; JobNotFoundError if there is none.

        A miss is confirmed by the bucket's leader (a replica serving a direct get may not
        have the record yet), so JobNotFoundError means the job is gone: expired, forgotten,
        or never created. Workers drop the tasks of such a job (meshkit.worker)."""
        try:
            entry = await self.kv.get(job_id)
            value, revision = entry.value, entry.revision
        except KeyNotFoundError:
            value = None
        if not value:
            found = await read_now(self.js, Buckets.JOBS, job_id)
            if found is None:
                raise JobNotFoundError(job_id)
            value, revision = found
        record = job_record_pb2.JobRecord()
        record.ParseFromString(value)
        return record, revision or 0

    async def require(self, job_id: str) -> None:
        """Raise JobNotFoundError unless the record exists now, as the bucket's leader sees it.

        The fence of forgetting a user: DeleteUser purges the user's job records before
        anything else of theirs, so a writer that calls this after writing either finds its
        job gone and takes back what it wrote, or wrote before the purge and DeleteUser's
        sweep that follows finds it (docs/architecture.md, "Forgetting a user")."""
        if not await exists_now(self.js, Buckets.JOBS, job_id):
            raise JobNotFoundError(job_id)

    async def update(self, job_id: str, mutate: Mutation) -> job_record_pb2.JobRecord:
        """Apply mutate with compare-and-set until it sticks; return the resulting record."""
        for attempt in range(self.max_attempts):
            record, revision = await self.get(job_id)
            was_final = is_final(record.job.state)
            if not mutate(record):
                return record
            _touch(record)
            try:
                await self.kv.update(
                    job_id, record.SerializeToString(deterministic=True), last=revision
                )
            except KeyWrongLastSequenceError:
                await asyncio.sleep(min(0.001 * (attempt + 1), 0.05))
            else:
                if not was_final and is_final(record.job.state):
                    _count_finished(record.job)
                return record
        raise ConflictError(f"job {job_id}: update lost {self.max_attempts} races in a row")

    async def end(
        self,
        job_id: str,
        state: int,
        error: str,
        *,
        code: int,
        only_from: frozenset[int] = frozenset(),
        missing_ok: bool = False,
    ) -> job_record_pb2.JobRecord | None:
        """End a job FAILED or CANCELLED with error (for the caller) and its ErrorCode, as
        Job.error_status (meshkit.job_errors), unless it has ended already (or is not in one
        of `only_from`, when given). `missing_ok` answers None for an unknown job."""

        def end_it(record: job_record_pb2.JobRecord) -> bool:
            if is_final(record.job.state) or (only_from and record.job.state not in only_from):
                return False
            end_with_error(record.job, state, error, code=code)
            return True

        try:
            return await self.update(job_id, end_it)
        except JobNotFoundError:
            if missing_ok:
                return None
            raise

    async def apply(self, job_id: str, mutate: Mutation) -> job_record_pb2.JobRecord:
        """Like update, but coalesced with other mutations of the same job queued meanwhile."""
        future: asyncio.Future[job_record_pb2.JobRecord] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending.setdefault(job_id, _Pending()).mutations.append((mutate, future))
        if job_id not in self._flushers:
            self._flushers[job_id] = asyncio.create_task(self._flush(job_id))
        return await future

    async def _flush(self, job_id: str) -> None:
        try:
            while pending := self._pending.pop(job_id, None):
                batch = pending.mutations
                try:
                    record = await self.update(job_id, _all_of([m for m, _ in batch]))
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(record)
        finally:
            self._flushers.pop(job_id, None)

    async def watch(self, job_id: str) -> AsyncGenerator[job_pb2.Job, None]:
        """The job's current state, then every change, ending after a final state.

        Raises JobNotFoundError when the job does not exist when the watch starts. The current
        state is read, not taken from the watch: nats-py's "initial values done" marker can
        arrive before a value already in flight, which would look like a missing job.
        """
        record, revision = await self.get(job_id)
        yield record.job
        if is_final(record.job.state):
            return
        watcher = await _open_watch(self.kv, job_id)
        try:
            async for entry in _entries(watcher):
                if entry is None or (entry.revision or 0) <= revision:
                    continue  # the marker, or a state already sent
                if entry.value is None or entry.operation is not None:
                    return  # deleted or expired while watched
                revision = entry.revision or revision
                record = job_record_pb2.JobRecord()
                record.ParseFromString(entry.value)
                yield record.job
                if is_final(record.job.state):
                    return
        finally:
            await stop_watcher(watcher)


async def _open_watch(kv: KeyValue, key: str) -> KeyValue.KeyWatcher:
    """kv.watch, but a caller cancelled while the watch is being set up (its client went
    away) still removes it: the subscription and consumer may exist by then."""
    opening = asyncio.ensure_future(kv.watch(key, inactive_threshold=WATCH_INACTIVE_S))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await stop_watcher(await opening)
        raise


async def stop_watcher(watcher: KeyValue.KeyWatcher) -> None:
    """Stop a KV watch and remove its consumer from the server now.

    nats-py's KeyWatcher.stop() only unsubscribes: the server would keep the ordered
    consumer until its inactive threshold. Its current name (an ordered consumer is recreated
    under a new one after a gap) is on the push subscription; tests/gateway/test_limits.py
    holds this to a real server's consumer count.
    """
    sub = getattr(watcher, "_sub", None)
    with contextlib.suppress(Exception):
        await watcher.stop()
    stream, consumer = getattr(sub, "_stream", None), getattr(sub, "_consumer", None)
    if sub is None or not stream or not consumer:
        return
    try:
        await asyncio.shield(sub._js.delete_consumer(stream, consumer))
    except Exception as exc:  # gone already, or NATS unreachable: the threshold removes it
        log.debug("KV watch consumer %s not deleted: %s", consumer, exc)


async def _entries(watcher: KeyValue.KeyWatcher) -> AsyncIterator[KeyValue.Entry | None]:
    while True:
        yield await watcher.updates(timeout=None)


def _all_of(mutations: list[Mutation]) -> Mutation:
    def mutate_all(record: job_record_pb2.JobRecord) -> bool:
        changed = False
        for mutate in mutations:
            changed = mutate(record) or changed
        return changed

    return mutate_all


def _count_finished(job: job_pb2.Job) -> None:
    """Metrics of a job whose write just made it final: only one write can win the
    compare-and-set from a non-final revision, so each job counts once, whoever ended it."""
    state = JobState.Name(job.state).removeprefix("JOB_STATE_")
    metrics.JOBS_FINISHED.labels(state).inc()
    lasted = job.end_time.ToNanoseconds() - job.create_time.ToNanoseconds()
    metrics.JOB_DURATION.labels(state).observe(max(0.0, lasted / 1e9))


def _touch(record: job_record_pb2.JobRecord) -> None:
    record.job.update_time.GetCurrentTime()
    if is_final(record.job.state) and not record.job.HasField("end_time"):
        record.job.end_time.GetCurrentTime()
