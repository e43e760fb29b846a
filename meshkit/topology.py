"""Every JetStream stream, consumer and KV bucket contextmesh uses, with its settings.

This module is the one place those values live; docs/architecture.md describes them.
`declare(js, replicas)` creates what is missing and updates what drifted, and every service
calls it at start, so any service can come up first on an empty server or a cluster.

Work streams use work-queue retention (a task leaves the stream when acked), file storage,
and a duplicate window long enough to drop a re-published task (every publish carries a
Nats-Msg-Id derived from job and task identity). Each has one durable pull consumer shared
by all replicas of its service, with explicit acks and a bounded number of deliveries; the
workers time the retries (`WorkStream`). A task that fails its last delivery is parked in
DEADLETTER.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from meshkit.config import Settings, StreamTiming
from meshkit.retry import DECLARE, Attempts

__all__ = [
    "ALL_BUCKETS",
    "ALL_WORK_STREAMS",
    "DEADLETTER",
    "DISCOVER",
    "JOB_ENDS",
    "MERGE",
    "NOTIFY",
    "SYNC",
    "TRAIN",
    "Bucket",
    "Buckets",
    "JobFeed",
    "WorkStream",
    "declare",
    "declare_as_configured",
    "work_stream",
]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
GIB = 1024 * MIB
MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@dataclass(frozen=True)
class WorkStream:
    """A work-queue stream, the one durable consumer that drains it, and its timing.

    Three clocks, each with one job (docs/architecture.md has the table):
    - ack_wait_s: JetStream redelivers a delivery that went this long without an ack or an
      in-progress. Workers send in-progress every third of it while a handler runs, so only
      a crashed or hung (stopped) worker's task moves on, after ack_wait_s.
    - deadline_s: the longest one attempt may run; the worker then cancels the handler and
      counts the attempt as failed, so a handler stuck on an await cannot hold its slot.
    - retry_backoff_s: after failed attempt n the worker naks with delay retry_backoff_s[n-1].
      The consumer has no BackOff of its own: with one, nats-server would take BackOff[0] as
      the ack wait and time redeliveries from the list, and ack_wait_s would mean nothing.
    """

    stream: str
    subject: str
    consumer: str
    ack_wait_s: float
    deadline_s: float
    retry_backoff_s: tuple[float, ...]
    max_ack_pending: int
    """Deliveries in flight across all replicas; also bounds how fast a backlog drains."""
    duplicate_window_s: float = 20 * MINUTE
    max_age_s: float = 7 * DAY
    max_bytes: int = 256 * MIB
    """Store bound: a full work stream refuses new publishes (discard new), it never drops
    accepted work, and a flood cannot fill the NATS store for everything else."""

    @property
    def max_deliver(self) -> int:
        """Every attempt and every redelivery after a crash counts; the last one parks."""
        return len(self.retry_backoff_s) + 1

    def retry_delay(self, attempt: int) -> float:
        """How long to wait after failed attempt `attempt` (1-based) before the next one."""
        return self.retry_backoff_s[min(attempt, len(self.retry_backoff_s)) - 1]

    def with_timing(self, timing: StreamTiming | None) -> WorkStream:
        """This stream with the overrides of `timing` (unset values keep the defaults)."""
        if timing is None:
            return self
        return replace(
            self,
            ack_wait_s=timing.ack_wait_s or self.ack_wait_s,
            deadline_s=timing.deadline_s or self.deadline_s,
            retry_backoff_s=timing.retry_backoff_s or self.retry_backoff_s,
        )


DISCOVER = WorkStream(
    stream="DISCOVER",
    subject="contextmesh.discover",
    consumer="syncsvc-discover",
    ack_wait_s=10,
    deadline_s=2 * MINUTE,
    retry_backoff_s=(1, 5, 15, 60),
    max_ack_pending=256,
)
# A crashed sync worker's repositories move on after 2 s: a refresh barely notices it.
SYNC = WorkStream(
    stream="SYNC",
    subject="contextmesh.sync",
    consumer="syncsvc-sync",
    ack_wait_s=2,
    deadline_s=2 * MINUTE,
    retry_backoff_s=(2, 10, 30, 60),
    max_ack_pending=4096,
    max_bytes=GIB,
)
MERGE = WorkStream(
    stream="MERGE",
    subject="contextmesh.merge",
    consumer="mergesvc",
    ack_wait_s=10,
    deadline_s=2 * MINUTE,
    retry_backoff_s=(1, 5, 15, 60),
    max_ack_pending=64,
)
# Training is low priority: its own stream, few in flight, long backoff between attempts.
TRAIN = WorkStream(
    stream="TRAIN",
    subject="contextmesh.train",
    consumer="trainsvc",
    ack_wait_s=60,
    deadline_s=30 * MINUTE,
    retry_backoff_s=(30, 120),
    max_ack_pending=4,
    max_age_s=2 * DAY,
)
# Telling users that their jobs ended: an HTTP POST to a server of theirs, which may be slow
# or down for a while, so the retries spread over about an hour and a half.
NOTIFY = WorkStream(
    stream="NOTIFY",
    subject="contextmesh.notify",
    consumer="notifysvc",
    ack_wait_s=10,
    deadline_s=30,
    retry_backoff_s=(10, 60, 300, 900, 3600),
    max_ack_pending=256,
    max_bytes=64 * MIB,
)
ALL_WORK_STREAMS = (DISCOVER, SYNC, MERGE, TRAIN, NOTIFY)


def work_stream(default: WorkStream, timing: Mapping[str, StreamTiming] | None) -> WorkStream:
    """`default` with the timing overrides of the settings (`Settings.timing`)."""
    return default.with_timing((timing or {}).get(default.stream))


DEADLETTER = "DEADLETTER"
DEADLETTER_SUBJECT_PREFIX = "contextmesh.deadletter"
DEADLETTER_MAX_AGE_S = 30 * DAY
DEADLETTER_MAX_BYTES = GIB


@dataclass(frozen=True)
class Bucket:
    """A KV bucket."""

    name: str
    history: int
    ttl_s: float
    """0 keeps entries until they are deleted."""
    description: str
    max_bytes: int = 256 * MIB
    """Store bound; a full bucket refuses writes (KV buckets discard new)."""


class Buckets:
    """The KV buckets, by role."""

    JOBS = Bucket("cm_jobs", 1, 14 * DAY, "job id -> JobRecord")
    # Coalescing needs only a user's latest job, never an old entry: they expire (a day is
    # far longer than the 2 h a job may go without moving), so unknown names leave nothing.
    ACTIVE = Bucket(
        "cm_active", 1, DAY, "user -> id of the user's latest job (coalescing)", 64 * MIB
    )
    # A user's job ids under their name, so ListJobs reads one user's keys, not every job's;
    # kept as long as the records they index.
    HISTORY = Bucket(
        "cm_history", 1, 14 * DAY, "<user>.<job id> -> (empty): a user's jobs", 256 * MIB
    )
    OUTCOMES = Bucket("cm_outcomes", 1, 14 * DAY, "<job id>.<index> -> RepoOutcome", GIB)
    BUNDLES = Bucket("cm_bundles", 5, 0, "user -> BundlePointer of the latest bundle", 64 * MIB)
    MODELS = Bucket("cm_models", 5, 0, "user -> ModelPointer of the serving model", 64 * MIB)
    HTTP_CACHE = Bucket(
        "cm_http_cache", 1, 30 * DAY, "<owner>.<sha256(url)> -> ETag and body blob key", GIB
    )
    SCHEDULES = Bucket("cm_schedules", 1, 0, "user -> Schedule (refresh every interval)", 64 * MIB)
    CALLBACKS = Bucket(
        "cm_callbacks", 1, 0, "user -> StoredCallback (URL and signing secret)", 64 * MIB
    )
    REDRIVES = Bucket(
        "cm_redrives", 1, 30 * DAY, "dead-letter sequence -> id of the job redriving it", 64 * MIB
    )
    # GitHub redelivers a webhook under the same X-GitHub-Delivery id, within hours at most.
    DELIVERIES = Bucket(
        "cm_deliveries", 1, DAY, "X-GitHub-Delivery -> (empty): a webhook received", 64 * MIB
    )
    # A pending entry lasts a debounce window, longer only while a job of its user refreshes
    # (ended within the 2 h the sweeper allows): a day leaves no orphan behind.
    PENDING = Bucket(
        "cm_pending", 1, DAY, "user -> PendingRefresh (pushes awaiting their job)", 64 * MIB
    )
    # Present only while DeleteUser runs (or after one was interrupted, until it is called
    # again): a refresh that finds it gives its job back. Never expires: an interrupted
    # deletion keeps the user closed to refreshes rather than half forgotten.
    FORGETTING = Bucket("cm_forgetting", 1, 0, "user -> (empty): a deletion under way", 64 * MIB)
    # What GitHub said of each credential's budget, shared by every sync replica so twenty of
    # them do not spend one token's budget blind (syncsvc/sources/github_budget.py). Keyed by
    # a non-reversible id of the token, never the token. An entry outlives GitHub's hour-long
    # window only by an hour: an unused credential's entry goes.
    GITHUB_BUDGETS = Bucket(
        "cm_github_budgets",
        1,
        2 * HOUR,
        "<sha256(token)[:16]> -> remaining, reset and pause of a GitHub credential",
        16 * MIB,
    )
    # A sync replica puts its key every third of the TTL; one that stops (crashed, hung,
    # scaled away) drops out when its key expires. Replicas divide GitHub's concurrency by
    # how many keys there are (syncsvc/replicas.py).
    SYNC_REPLICAS = Bucket(
        "cm_sync_replicas", 1, 15, "<replica id> -> (empty): a live sync replica", 16 * MIB
    )
    # The retention sweep's fence with the writers that reference blobs (gateway/retention.py,
    # meshkit/domain/retention_fence.py): its mark while it runs, and one hold per blob it
    # is about to delete or a writer is keeping. Emptied by every sweep; no TTL, so a hold
    # never lapses under a sweep that is still running.
    RETENTION = Bucket(
        "cm_retention",
        1,
        0,
        "sweep -> the sweep under way; hold.<sha256(blob key)> -> kept or doomed",
        64 * MIB,
    )


ALL_BUCKETS = (
    Buckets.JOBS,
    Buckets.ACTIVE,
    Buckets.HISTORY,
    Buckets.OUTCOMES,
    Buckets.BUNDLES,
    Buckets.MODELS,
    Buckets.HTTP_CACHE,
    Buckets.SCHEDULES,
    Buckets.CALLBACKS,
    Buckets.REDRIVES,
    Buckets.DELIVERIES,
    Buckets.PENDING,
    Buckets.FORGETTING,
    Buckets.GITHUB_BUDGETS,
    Buckets.SYNC_REPLICAS,
    Buckets.RETENTION,
)


@dataclass(frozen=True)
class JobFeed:
    """A durable consumer on the job bucket's own stream: every revision of every job record,
    whichever service wrote it. notifysvc reads it to learn that a job ended (a final state),
    so no service has to remember to announce it, and one that crashes right after ending a
    job cannot lose the announcement: the revision waits in the stream until acked."""

    stream: str
    subject: str
    consumer: str
    ack_wait_s: float
    max_ack_pending: int


JOB_ENDS = JobFeed(
    stream=f"KV_{Buckets.JOBS.name}",
    subject=f"$KV.{Buckets.JOBS.name}.>",
    consumer="notifysvc-jobs",
    ack_wait_s=30,
    max_ack_pending=1024,
)

MAX_VALUE_BYTES = 1024 * 1024


def work_stream_config(
    ws: WorkStream, replicas: int, max_bytes: Mapping[str, int] | None = None
) -> StreamConfig:
    return StreamConfig(
        name=ws.stream,
        subjects=[ws.subject],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=ws.duplicate_window_s,
        max_age=ws.max_age_s,
        max_msg_size=MAX_VALUE_BYTES,
        max_bytes=(max_bytes or {}).get(ws.stream, ws.max_bytes),
        # Full: refuse the publish (the publisher sees an error), never drop accepted work.
        discard=DiscardPolicy.NEW,
    )


def consumer_config(ws: WorkStream) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=ws.consumer,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ws.ack_wait_s,
        max_deliver=ws.max_deliver,
        # No BackOff: it would replace ack_wait (see WorkStream); workers nak with the delay.
        backoff=[],
        max_ack_pending=ws.max_ack_pending,
        filter_subject=ws.subject,
    )


def job_feed_config(feed: JobFeed) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=feed.consumer,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=feed.ack_wait_s,
        # Jobs that ended before the consumer existed are not announced.
        deliver_policy=DeliverPolicy.NEW,
        # Acting on a revision only publishes a task: it is retried until it works.
        max_deliver=-1,
        max_ack_pending=feed.max_ack_pending,
        filter_subject=feed.subject,
    )


def deadletter_stream_config(
    replicas: int, max_bytes: Mapping[str, int] | None = None
) -> StreamConfig:
    return StreamConfig(
        name=DEADLETTER,
        subjects=[f"{DEADLETTER_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=20 * MINUTE,
        max_age=DEADLETTER_MAX_AGE_S,
        max_msg_size=2 * MAX_VALUE_BYTES,
        max_bytes=(max_bytes or {}).get(DEADLETTER, DEADLETTER_MAX_BYTES),
        # Full: the oldest parked task goes, so a worker can always park (and term) a task.
        discard=DiscardPolicy.OLD,
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s", config.name)
        return
    try:
        await js.update_stream(config)
    except BadRequestError as exc:  # e.g. replicas cannot change on a single server
        log.warning("stream %s kept its settings: %s", config.name, exc.description)


async def declare_as_configured(js: JetStreamContext, settings: Settings) -> None:
    """`declare` with what the settings say: replicas, stream timing and byte bounds. Every
    declaring step (a service on an open server, `up`'s admin step, the k8s Job) uses it, so
    they cannot disagree with the workers. A cluster still electing its leaders answers with
    timeouts or 503s for a while: the declaration is tried again until DECLARE gives up."""
    attempts = Attempts(DECLARE)
    while True:
        try:
            await declare(
                js,
                replicas=settings.nats.replicas,
                timing=settings.timing,
                max_bytes=settings.nats.max_bytes,
            )
            return
        except (NatsTimeoutError, ServiceUnavailableError) as exc:
            delay = attempts.next_delay_s()
            if delay is None:
                raise
            log.warning("declaring the topology failed (%s); trying again", type(exc).__name__)
            await asyncio.sleep(delay)


async def declare(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    timing: Mapping[str, StreamTiming] | None = None,
    max_bytes: Mapping[str, int] | None = None,
) -> None:
    """Create or update every stream, consumer and bucket. Safe to run from every process.
    `timing` overrides the streams' timing (Settings.timing); every process must pass the same.
    `max_bytes` overrides a stream's or bucket's byte bound by name (CONTEXTMESH_JS_MAX_BYTES)."""
    for default in ALL_WORK_STREAMS:
        ws = work_stream(default, timing)
        await _ensure_stream(js, work_stream_config(ws, replicas, max_bytes))
        await js.add_consumer(ws.stream, consumer_config(ws))
    await _ensure_stream(js, deadletter_stream_config(replicas, max_bytes))
    for bucket in ALL_BUCKETS:
        config = KeyValueConfig(
            bucket=bucket.name,
            description=bucket.description,
            history=bucket.history,
            ttl=bucket.ttl_s or None,
            storage=StorageType.FILE,
            replicas=replicas,
            max_value_size=MAX_VALUE_BYTES,
            max_bytes=(max_bytes or {}).get(bucket.name, bucket.max_bytes),
            # Reads skip the JSON API: a direct get answers with the raw message.
            direct=True,
        )
        try:
            info = await js.stream_info(f"KV_{bucket.name}")
        except NotFoundError:
            await js.create_key_value(config)
            log.info("created KV bucket %s", bucket.name)
            continue
        # A bucket made by an older version: before direct gets, before (this) byte bound,
        # or with another TTL (cm_active's entries expire now).
        ttl_drifted = abs((info.config.max_age or 0) - bucket.ttl_s) > 1
        if not info.config.allow_direct or info.config.max_bytes != config.max_bytes or ttl_drifted:
            info.config.allow_direct = True
            info.config.max_bytes = config.max_bytes
            info.config.max_age = bucket.ttl_s
            await js.update_stream(info.config)
    await js.add_consumer(JOB_ENDS.stream, job_feed_config(JOB_ENDS))
