"""Every JetStream stream, consumer and KV bucket contextmesh uses, with its settings.

This module is the one place those values live; docs/architecture.md describes them.
`declare(js, replicas)` creates what is missing and updates what drifted, and every service
calls it at start, so any service can come up first on an empty server or a cluster.

Work streams use work-queue retention (a task leaves the stream when acked), file storage,
and a duplicate window long enough to drop a re-published task (every publish carries a
Nats-Msg-Id derived from job and task identity). Each has one durable pull consumer shared
by all replicas of its service, with explicit acks, a bounded number of deliveries and a
backoff between them. A task that fails its last delivery is parked in DEADLETTER.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from meshkit.config import TrainSettings

__all__ = [
    "ALL_BUCKETS",
    "ALL_WORK_STREAMS",
    "DEADLETTER",
    "DISCOVER",
    "MERGE",
    "SYNC",
    "TRAIN",
    "Bucket",
    "Buckets",
    "WorkStream",
    "declare",
    "train_stream",
]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
GIB = 1024 * MIB
MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@dataclass(frozen=True)
class WorkStream:
    """A work-queue stream and the one durable consumer that drains it."""

    stream: str
    subject: str
    consumer: str
    ack_wait_s: float
    """How long a delivery may go unacknowledged; workers send in-progress well within it."""
    max_deliver: int
    backoff_s: tuple[float, ...]
    """Delay before each redelivery; the server requires max_deliver > len(backoff)."""
    max_ack_pending: int
    """Deliveries in flight across all replicas; also bounds how fast a backlog drains."""
    duplicate_window_s: float = 20 * MINUTE
    max_age_s: float = 7 * DAY
    max_bytes: int = 256 * MIB
    """Store bound: a full work stream refuses new publishes (discard new), it never drops
    accepted work, and a flood cannot fill the NATS store for everything else."""


DISCOVER = WorkStream(
    stream="DISCOVER",
    subject="contextmesh.discover",
    consumer="syncsvc-discover",
    ack_wait_s=60,
    max_deliver=5,
    backoff_s=(1, 5, 15, 60),
    max_ack_pending=256,
)
SYNC = WorkStream(
    stream="SYNC",
    subject="contextmesh.sync",
    consumer="syncsvc-sync",
    ack_wait_s=60,
    max_deliver=5,
    backoff_s=(2, 10, 30, 60),
    max_ack_pending=4096,
    max_bytes=GIB,
)
MERGE = WorkStream(
    stream="MERGE",
    subject="contextmesh.merge",
    consumer="mergesvc",
    ack_wait_s=120,
    max_deliver=5,
    backoff_s=(1, 5, 15, 60),
    max_ack_pending=64,
)
# Training is low priority: its own stream, few in flight, long backoff between attempts.
TRAIN = WorkStream(
    stream="TRAIN",
    subject="contextmesh.train",
    consumer="trainsvc",
    ack_wait_s=60,
    max_deliver=3,
    backoff_s=(30, 120),
    max_ack_pending=4,
    max_age_s=2 * DAY,
)
ALL_WORK_STREAMS = (DISCOVER, SYNC, MERGE, TRAIN)


def train_stream(train: TrainSettings | None = None) -> WorkStream:
    """TRAIN with the retry timing of the settings; unset values keep TRAIN's. A worker's
    in-progress follows each delivery's own deadline (meshkit.worker.ack_deadline), so any
    ack wait and backoff go together."""
    train = train or TrainSettings()
    backoff = train.retry_backoff_s or TRAIN.backoff_s
    return replace(
        TRAIN,
        ack_wait_s=train.ack_wait_s or TRAIN.ack_wait_s,
        backoff_s=backoff,
        max_deliver=len(backoff) + 1,
    )


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
    ACTIVE = Bucket(
        "cm_active", 1, 0, "user -> id of the user's running job (coalescing)", 64 * MIB
    )
    OUTCOMES = Bucket("cm_outcomes", 1, 14 * DAY, "<job id>.<index> -> RepoOutcome", GIB)
    BUNDLES = Bucket("cm_bundles", 5, 0, "user -> BundlePointer of the latest bundle", 64 * MIB)
    MODELS = Bucket("cm_models", 5, 0, "user -> ModelPointer of the serving model", 64 * MIB)
    HTTP_CACHE = Bucket("cm_http_cache", 1, 30 * DAY, "sha256(url) -> ETag and body blob key", GIB)


ALL_BUCKETS = (
    Buckets.JOBS,
    Buckets.ACTIVE,
    Buckets.OUTCOMES,
    Buckets.BUNDLES,
    Buckets.MODELS,
    Buckets.HTTP_CACHE,
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
        backoff=list(ws.backoff_s),
        max_ack_pending=ws.max_ack_pending,
        filter_subject=ws.subject,
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


async def declare(
    js: JetStreamContext,
    *,
    replicas: int = 1,
    train: TrainSettings | None = None,
    max_bytes: Mapping[str, int] | None = None,
) -> None:
    """Create or update every stream, consumer and bucket. Safe to run from every process.
    `train` sets TRAIN's retry timing (tests shorten it); every process must pass the same.
    `max_bytes` overrides a stream's or bucket's byte bound by name (CONTEXTMESH_JS_MAX_BYTES)."""
    for default in ALL_WORK_STREAMS:
        ws = train_stream(train) if default is TRAIN else default
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
        # A bucket made before direct gets were on, or before it had (this) byte bound.
        if not info.config.allow_direct or info.config.max_bytes != config.max_bytes:
            info.config.allow_direct = True
            info.config.max_bytes = config.max_bytes
            await js.update_stream(info.config)
