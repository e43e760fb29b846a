"""Erasing keys for good, and asking whether a key exists as the stream's leader sees it.

A KV delete or purge leaves a marker under the key's subject, so the key itself (a user's
name, a job id) stays in the bucket's stream. Forgetting a user (docs/architecture.md,
"Forgetting a user") purges the subject from the stream instead: nothing of the key is left.

Buckets serve direct gets, which any replica may answer and a lagging one may answer with a
value that is already gone. A writer that must know whether its job was forgotten while it
wrote (the fence DeleteUser relies on) asks the leader instead.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from meshkit.topology import Bucket

__all__ = ["exists_now", "purge", "read_now"]

_REMOVED = frozenset({"DEL", "PURGE"})


def _stream(bucket: Bucket) -> str:
    return f"KV_{bucket.name}"


async def purge(js: JetStreamContext, bucket: Bucket, key: str) -> None:
    """Remove every revision of key (a `*` or `>` wildcard matches many) and its markers."""
    await js.purge_stream(_stream(bucket), subject=f"$KV.{bucket.name}.{key}")


async def read_now(js: JetStreamContext, bucket: Bucket, key: str) -> tuple[bytes, int] | None:
    """Key's value and revision, read from the stream's leader (never a lagging replica);
    None when it holds no value."""
    try:
        msg = await js.get_last_msg(_stream(bucket), f"$KV.{bucket.name}.{key}", direct=False)
    except NotFoundError:
        return None
    headers = msg.headers or {}
    # A delete or purge marker (KV-Operation), or one the server placed (nats-server 2.11+).
    if headers.get("KV-Operation") in _REMOVED or "Nats-Marker-Reason" in headers:
        return None
    return msg.data or b"", msg.seq or 0


async def exists_now(js: JetStreamContext, bucket: Bucket, key: str) -> bool:
    """Whether key holds a value, as the stream's leader sees it."""
    return await read_now(js, bucket, key) is not None
