"""Who may do what on NATS: one NKey identity per service, least-privilege subject permissions.

NATS checks every PUB and SUB against the connection's permissions, so the table below is the
whole access-control story of the mesh. JetStream work is done by publishing to subjects:

- `$JS.API.<verb>.<stream>...` for API requests (stream info, consumer create, message get),
  answered on the caller's inbox; `$JS.API.DIRECT.GET.<stream>.>` for KV reads (direct get);
- `$KV.<bucket>.<key>` for a KV write, `$JS.ACK.<stream>.<consumer>.>` for an ack;
- `$JS.FC.<stream>.>` answers flow control of a KV watch (an ordered push consumer).

Each identity gets its own inbox prefix (`_INBOX_<name>`, CONTEXTMESH_NATS_USER), so no service
can read another's replies. Declaring the topology (stream, consumer and bucket create or
update) needs `$JS.API.>` and is done once by the `admin` identity (`contextmesh up` before the
services start, a Job on Kubernetes); services only bind to what exists.

`generate(folder)` writes one seed file per identity (mode 0600, kept across restarts) and
`authorization_block(public_keys)` the server config that names their public keys.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from meshkit.topology import (
    ALL_BUCKETS,
    DEADLETTER,
    DEADLETTER_SUBJECT_PREFIX,
    DISCOVER,
    JOB_ENDS,
    MERGE,
    NOTIFY,
    SYNC,
    TRAIN,
    Bucket,
    Buckets,
    JobFeed,
    WorkStream,
)

__all__ = [
    "ADMIN",
    "IDENTITIES",
    "SERVICES",
    "Identity",
    "authorization_block",
    "generate",
    "inbox_prefix",
    "seed_path",
]

ADMIN = "admin"
OPS = "ops"
SERVICES = ("gateway", "syncsvc", "mergesvc", "trainsvc", "searchsvc", "notifysvc")
SEED_SUFFIX = ".nk"


def inbox_prefix(name: str) -> str:
    """The reply-subject prefix of an identity: only it may subscribe there."""
    return f"_INBOX_{name}"


@dataclass(frozen=True)
class Identity:
    """A NATS user: what it may publish and subscribe to (everything else is denied)."""

    name: str
    purpose: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    streams: tuple[str, ...] = ()
    """Streams (KV_<bucket> included) the service binds to at start; it may read their info."""


def _kv_read(bucket: Bucket) -> list[str]:
    stream = f"KV_{bucket.name}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
    ]


def _kv_write(bucket: Bucket) -> list[str]:
    return [*_kv_read(bucket), f"$KV.{bucket.name}.>"]


def _kv_purge(*buckets: Bucket) -> list[str]:
    """Remove keys with no marker left behind: forgetting a user (DeleteUser), and a writer
    taking back what it wrote for a job that was forgotten meanwhile."""
    return [f"$JS.API.STREAM.PURGE.KV_{b.name}" for b in buckets]


def _kv_watch(bucket: Bucket) -> list[str]:
    stream = f"KV_{bucket.name}"
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _consume(ws: WorkStream) -> list[str]:
    """Pull from the stream's one durable consumer, ack, fetch/delete a message whose
    deliveries ran out (the advisory names it by sequence), park it, and take a letter back
    when its job turns out to be forgotten."""
    return [
        f"$JS.API.STREAM.INFO.{ws.stream}",
        f"$JS.API.CONSUMER.INFO.{ws.stream}.{ws.consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{ws.stream}.{ws.consumer}",
        f"$JS.ACK.{ws.stream}.{ws.consumer}.>",
        f"$JS.API.STREAM.MSG.GET.{ws.stream}",
        f"$JS.API.STREAM.MSG.DELETE.{ws.stream}",
        f"{DEADLETTER_SUBJECT_PREFIX}.{ws.stream}",
        f"$JS.API.STREAM.MSG.DELETE.{DEADLETTER}",
    ]


def _follow(feed: JobFeed) -> list[str]:
    """Pull from a durable consumer on a bucket's stream and ack what was read."""
    return [
        f"$JS.API.CONSUMER.INFO.{feed.stream}.{feed.consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{feed.stream}.{feed.consumer}",
        f"$JS.ACK.{feed.stream}.{feed.consumer}.>",
    ]


def _advisory(ws: WorkStream) -> str:
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{ws.stream}.{ws.consumer}"


def _kv_streams(*buckets: Bucket) -> tuple[str, ...]:
    return tuple(f"KV_{b.name}" for b in buckets)


# Every bucket that holds something of a user's, which DeleteUser (the ops identity) purges:
# all but the webhook delivery ids, the GitHub budgets, the live sync replicas and the
# retention fence, which name no one.
_NO_USER_DATA = (
    Buckets.DELIVERIES,
    Buckets.GITHUB_BUDGETS,
    Buckets.SYNC_REPLICAS,
    Buckets.RETENTION,
)
_USER_DATA = tuple(b for b in ALL_BUCKETS if b not in _NO_USER_DATA)


def _identities() -> tuple[Identity, ...]:
    return (
        Identity(
            "gateway",
            "starts jobs (cm_jobs, cm_active, cm_history, DISCOVER), watches and lists them, "
            "keeps schedules (cm_schedules) and callbacks (cm_callbacks), takes webhooks "
            "(cm_deliveries, cm_pending), reads bundle pointers",
            publish=(
                DISCOVER.subject,
                *_kv_write(Buckets.JOBS),
                *_kv_watch(Buckets.JOBS),
                *_kv_write(Buckets.ACTIVE),
                *_kv_write(Buckets.HISTORY),
                *_kv_write(Buckets.SCHEDULES),
                *_kv_watch(Buckets.SCHEDULES),
                *_kv_write(Buckets.CALLBACKS),
                *_kv_write(Buckets.DELIVERIES),
                *_kv_write(Buckets.PENDING),
                *_kv_watch(Buckets.PENDING),
                *_kv_read(Buckets.BUNDLES),
                # A refresh, schedule or callback racing DeleteUser takes itself back
                # (gateway/forget_fence.py).
                *_kv_read(Buckets.FORGETTING),
                *_kv_purge(
                    Buckets.JOBS,
                    Buckets.ACTIVE,
                    Buckets.HISTORY,
                    Buckets.SCHEDULES,
                    Buckets.CALLBACKS,
                ),
            ),
            subscribe=(),
            streams=_kv_streams(
                Buckets.JOBS,
                Buckets.ACTIVE,
                Buckets.HISTORY,
                Buckets.SCHEDULES,
                Buckets.CALLBACKS,
                Buckets.DELIVERIES,
                Buckets.PENDING,
                Buckets.BUNDLES,
                Buckets.FORGETTING,
            ),
        ),
        Identity(
            OPS,
            "the gateway's OpsService: lists dead letters, redrives each as a new job (a "
            "refresh, or a training of a bundle) or, for a notification, as a new delivery; "
            "deletes them; forgets a user (DeleteUser: every key of theirs, purged); sweeps "
            "blobs nothing references (CollectGarbage: reads jobs, outcomes, pointers and the "
            "ETag cache, fences with writers in cm_retention)",
            publish=(
                f"$JS.API.STREAM.INFO.{DEADLETTER}",
                f"$JS.API.STREAM.MSG.GET.{DEADLETTER}",
                f"$JS.API.STREAM.MSG.DELETE.{DEADLETTER}",
                DISCOVER.subject,
                TRAIN.subject,
                NOTIFY.subject,
                *_kv_write(Buckets.JOBS),
                *_kv_write(Buckets.ACTIVE),
                *_kv_write(Buckets.HISTORY),
                *_kv_write(Buckets.REDRIVES),
                *_kv_write(Buckets.FORGETTING),
                *_kv_purge(*_USER_DATA),
                *(f"$JS.API.STREAM.INFO.KV_{b.name}" for b in _USER_DATA),
                # The retention sweep (gateway/retention.py) reads every reference to a blob.
                *_kv_read(Buckets.OUTCOMES),
                *_kv_watch(Buckets.JOBS),
                *_kv_watch(Buckets.BUNDLES),
                *_kv_watch(Buckets.MODELS),
                *_kv_watch(Buckets.HTTP_CACHE),
                *_kv_write(Buckets.RETENTION),
                *_kv_purge(Buckets.RETENTION),
            ),
            subscribe=(),
            streams=(DEADLETTER, *_kv_streams(*_USER_DATA, Buckets.RETENTION)),
        ),
        Identity(
            "syncsvc",
            "consumes DISCOVER and SYNC, publishes SYNC and MERGE, records outcomes, shares "
            "GitHub budgets (cm_github_budgets) and counts live replicas (cm_sync_replicas)",
            publish=(
                SYNC.subject,
                MERGE.subject,
                *_consume(DISCOVER),
                *_consume(SYNC),
                *_kv_write(Buckets.JOBS),
                *_kv_write(Buckets.OUTCOMES),
                *_kv_write(Buckets.HTTP_CACHE),
                *_kv_read(Buckets.BUNDLES),
                *_kv_write(Buckets.GITHUB_BUDGETS),
                *_kv_write(Buckets.SYNC_REPLICAS),
                *_kv_purge(Buckets.OUTCOMES, Buckets.HTTP_CACHE, Buckets.SYNC_REPLICAS),
                # Keeps the blobs it references from a retention sweep under way.
                *_kv_write(Buckets.RETENTION),
            ),
            subscribe=(_advisory(DISCOVER), _advisory(SYNC)),
            streams=(
                DISCOVER.stream,
                SYNC.stream,
                *_kv_streams(
                    Buckets.JOBS,
                    Buckets.OUTCOMES,
                    Buckets.HTTP_CACHE,
                    Buckets.BUNDLES,
                    Buckets.GITHUB_BUDGETS,
                    Buckets.SYNC_REPLICAS,
                    Buckets.RETENTION,
                ),
            ),
        ),
        Identity(
            "mergesvc",
            "consumes MERGE, moves bundle pointers (only it writes cm_bundles), publishes TRAIN",
            publish=(
                TRAIN.subject,
                *_consume(MERGE),
                *_kv_write(Buckets.JOBS),
                *_kv_read(Buckets.OUTCOMES),
                *_kv_write(Buckets.BUNDLES),
                *_kv_purge(Buckets.BUNDLES),
                # Whether the serving model was tuned on the bundle already (no training).
                *_kv_read(Buckets.MODELS),
                # Keeps the bundle it points at from a retention sweep under way.
                *_kv_write(Buckets.RETENTION),
            ),
            subscribe=(_advisory(MERGE),),
            streams=(
                MERGE.stream,
                *_kv_streams(
                    Buckets.JOBS,
                    Buckets.OUTCOMES,
                    Buckets.BUNDLES,
                    Buckets.MODELS,
                    Buckets.RETENTION,
                ),
            ),
        ),
        Identity(
            "trainsvc",
            "consumes TRAIN, moves model pointers (the only writer of cm_models)",
            publish=(
                *_consume(TRAIN),
                *_kv_write(Buckets.JOBS),
                *_kv_write(Buckets.MODELS),
                *_kv_purge(Buckets.MODELS),
                *_kv_read(Buckets.BUNDLES),
            ),
            subscribe=(_advisory(TRAIN),),
            streams=(TRAIN.stream, *_kv_streams(Buckets.JOBS, Buckets.MODELS, Buckets.BUNDLES)),
        ),
        Identity(
            "searchsvc",
            "reads bundle and model pointers",
            publish=(*_kv_read(Buckets.BUNDLES), *_kv_read(Buckets.MODELS)),
            subscribe=(),
            streams=_kv_streams(Buckets.BUNDLES, Buckets.MODELS),
        ),
        Identity(
            "notifysvc",
            "follows job records (cm_jobs) to queue a NOTIFY task per ended job, consumes "
            "NOTIFY, reads callbacks (cm_callbacks)",
            publish=(
                NOTIFY.subject,
                *_consume(NOTIFY),
                *_follow(JOB_ENDS),
                *_kv_read(Buckets.JOBS),
                *_kv_read(Buckets.CALLBACKS),
            ),
            subscribe=(_advisory(NOTIFY),),
            streams=(NOTIFY.stream, *_kv_streams(Buckets.JOBS, Buckets.CALLBACKS)),
        ),
        Identity(
            ADMIN,
            "declares streams, consumers and buckets (up, the k8s declare Job); repairs KV entries",
            publish=("$JS.API.>", "$KV.>"),
            subscribe=(),
        ),
    )


IDENTITIES: Mapping[str, Identity] = {i.name: i for i in _identities()}


def seed_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{SEED_SUFFIX}"


def _new_seed() -> bytes:
    import nkeys  # nats-py's own NKey library (the `nkeys` package)

    return bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: bytes) -> str:
    """The user's public NKey (U...), the only part the server config names."""
    import nkeys

    pair = nkeys.from_seed(bytearray(seed.strip()))
    try:
        return str(pair.public_key.decode())
    finally:
        pair.wipe()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def generate(folder: Path, names: Iterable[str] = IDENTITIES) -> dict[str, str]:
    """A seed file per identity in folder (created 0700; each seed 0600, written once and kept
    on later starts). Returns name -> public key."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    keys = {}
    for name in names:
        path = seed_path(folder, name)
        if not path.exists():
            _write_private(path, _new_seed() + b"\n")
        path.chmod(0o600)
        keys[name] = public_key(path.read_bytes())
    return keys


def _list(subjects: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(s) for s in subjects) + "]"


def authorization_block(public_keys: Mapping[str, str]) -> str:
    """The nats-server `authorization` block: one user per NKey with its permissions. A
    connection without a known NKey is refused; what a user's lists do not allow is denied."""
    lines = ["authorization {", "  users = ["]
    for name, key in public_keys.items():
        identity = IDENTITIES[name]
        subscribe = [f"{inbox_prefix(name)}.>", *identity.subscribe]
        lines += [
            f"    # {name}: {identity.purpose}",
            f"    {{ nkey: {json.dumps(key)}, permissions: {{",
            f"      publish: {{ allow: {_list(identity.publish)} }}",
            f"      subscribe: {{ allow: {_list(subscribe)} }}",
            "    } }",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"
