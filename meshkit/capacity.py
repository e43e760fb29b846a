"""An alert before a stream or bucket is full.

Every stream and bucket has a byte bound (meshkit/topology.py); a full work stream refuses
new tasks, so refreshes start failing with RESOURCE_EXHAUSTED. Each service looks at the
streams it uses (its NATS identity's, or every one on an open server) every
CONTEXTMESH_CAPACITY_CHECK_S and logs an error naming the stream, how full it is and what
to do once it passes CONTEXTMESH_CAPACITY_WARN of its bound, and one line when it is back
under: a log alert an operator can route today. Each look also exports every stream's
message and byte counts as Prometheus gauges (meshkit.metrics), DEADLETTER's among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from nats.js import JetStreamContext

from meshkit.config import NatsSettings
from meshkit.metrics import STREAM_BYTES, STREAM_MESSAGES
from meshkit.nats_auth import IDENTITIES
from meshkit.topology import ALL_BUCKETS, ALL_WORK_STREAMS, DEADLETTER

__all__ = ["CapacityWatch", "streams_of"]

log = logging.getLogger(__name__)


def streams_of(user: str | None) -> tuple[str, ...]:
    """The streams an identity uses (it may read their info); all of them without one."""
    identity = IDENTITIES.get(user or "")
    if identity is not None:
        return identity.streams
    return (
        *(ws.stream for ws in ALL_WORK_STREAMS),
        DEADLETTER,
        *(f"KV_{b.name}" for b in ALL_BUCKETS),
    )


class CapacityWatch:
    """Warns when any of `streams` holds more than `warn_at` of its max_bytes."""

    def __init__(
        self,
        js: JetStreamContext,
        streams: Iterable[str],
        *,
        warn_at: float = 0.8,
        interval_s: float = 60.0,
    ) -> None:
        self.js = js
        self.streams = tuple(streams)
        self.warn_at = warn_at
        self.interval_s = interval_s
        self._over: set[str] = set()

    @classmethod
    def for_identity(
        cls, js: JetStreamContext, nats: NatsSettings, user: str | None
    ) -> CapacityWatch:
        """A watch over what `user` (a NATS identity) uses, as the settings configure it."""
        return cls(
            js, streams_of(user), warn_at=nats.capacity_warn, interval_s=nats.capacity_check_s
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Check every interval until stop is set; a failed check waits for the next one."""
        while not stop.is_set():
            try:
                await self.check()
            except Exception as exc:
                log.warning("capacity check failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    async def check(self) -> dict[str, float]:
        """The streams over the threshold now, with how full each is (0..1)."""
        over: dict[str, float] = {}
        for stream in self.streams:
            info = await self.js.stream_info(stream)
            STREAM_MESSAGES.labels(stream).set(info.state.messages or 0)
            STREAM_BYTES.labels(stream).set(info.state.bytes or 0)
            bound = info.config.max_bytes or 0
            if bound <= 0:
                continue  # unbounded: nothing to warn about
            used = (info.state.bytes or 0) / bound
            if used >= self.warn_at:
                over[stream] = used
                log.error(
                    "stream %s is %.0f%% full (%d of %d bytes): when full it refuses new "
                    "messages; drain it, or raise its bound with CONTEXTMESH_JS_MAX_BYTES",
                    stream,
                    100 * used,
                    info.state.bytes,
                    bound,
                    extra={"stream": stream, "fullness": round(used, 3)},
                )
            elif stream in self._over:
                log.info("stream %s is back under %.0f%% full", stream, 100 * self.warn_at)
        self._over = set(over)
        return over
