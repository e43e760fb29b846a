"""How many sync replicas are alive now, so each takes its fair part of GitHub's concurrency.

GitHub allows about 100 concurrent requests per token; the replicas together keep to 80
(GITHUB_CONCURRENCY_BUDGET). A fixed split by the configured replica count wastes most of it
when KEDA runs fewer replicas than the maximum and overshoots when it runs more, so each
replica heartbeats instead: it puts its key in cm_sync_replicas every third of the bucket's
TTL, and counts the keys present (one STREAM.INFO, which names every subject still holding a
message). A replica that crashes or hangs drops out when its key expires; one that stops
cleanly purges its key at once. Between heartbeats the last count stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from meshkit.erasure import purge
from meshkit.topology import Bucket, Buckets

__all__ = ["LiveReplicas"]

log = logging.getLogger(__name__)


class LiveReplicas:
    """This replica's heartbeat and its view of how many replicas are alive."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: Bucket = Buckets.SYNC_REPLICAS,
        *,
        replica_id: str | None = None,
    ) -> None:
        self._js = js
        self._bucket = bucket
        self.replica_id = replica_id or _replica_id()
        self._every_s = bucket.ttl_s / 3
        self._count = 1
        self._kv: KeyValue | None = None

    def __repr__(self) -> str:
        return f"LiveReplicas(id='{self.replica_id}', live={self._count})"

    @property
    def count(self) -> int:
        """Replicas alive at the last heartbeat, this one included (at least 1)."""
        return self._count

    def share(self, budget: int) -> int:
        """This replica's part of `budget`: an even split among the live ones, at least 1."""
        return max(1, budget // self._count)

    async def beat(self) -> int:
        """Put this replica's key, then count the live ones; the count."""
        if self._kv is None:
            self._kv = await self._js.key_value(self._bucket.name)
        await self._kv.put(self.replica_id, b"")
        stream = f"KV_{self._bucket.name}"
        info = await self._js.stream_info(stream, subjects_filter=f"$KV.{self._bucket.name}.>")
        live = len(info.state.subjects or {})
        if live != self._count:
            log.info("sync replicas alive: %d (was %d)", max(1, live), self._count)
        self._count = max(1, live)
        return self._count

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat until `stop`, then leave (purge the key) so the others grow at once."""
        try:
            while not stop.is_set():
                try:
                    await self.beat()
                except (NatsError, TimeoutError, OSError) as exc:
                    # NATS is away: keep the last count; the key expires if this lasts.
                    log.warning("sync replica heartbeat failed: %s", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._every_s)
        finally:
            with contextlib.suppress(NatsError, TimeoutError, OSError):
                await purge(self._js, self._bucket, self.replica_id)


def _replica_id() -> str:
    """The host's name (a pod's name on Kubernetes) made a valid key, and a random suffix
    so that two processes on one host never share a key."""
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40]
    return f"{host or 'replica'}-{secrets.token_hex(4)}"
