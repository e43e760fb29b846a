"""Token buckets per key, in memory: how the gateway keeps one caller from flooding the rest.

Each key (a caller's `sub`) has a bucket that holds up to `burst` tokens and refills at
`rate` tokens a second; a call takes one token or is refused with the time until the next
one. The clock is injected, so tests move time instead of sleeping. Nothing awaits in here,
so a check-and-take is atomic on the event loop.

The table is bounded: a bucket that has refilled completely holds nothing worth keeping
(a new one starts full), so such buckets are dropped when the table grows past `max_keys`,
and if every bucket is still in use the least recently used ones go.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Clock", "Limit", "RateLimiter", "take_all"]

Clock = Callable[[], float]
"""Seconds from an arbitrary start, never going back (time.monotonic)."""


@dataclass(frozen=True)
class Limit:
    """At most `burst` calls at once, refilled at `rate` calls a second."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"a limit needs rate > 0 and burst >= 1, got {self}")

    def describe(self) -> str:
        pace = f"{self.rate:g} a second" if self.rate >= 1 else f"one every {1 / self.rate:g} s"
        return f"{pace}, in bursts of up to {self.burst}"


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """One token bucket per key, all with the same Limit."""

    def __init__(
        self, limit: Limit, *, clock: Clock = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.limit = limit
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def wait_s(self, key: str) -> float:
        """Seconds until `key` may call again: 0 when it may call now."""
        tokens = self._refilled(key, self.clock()).tokens
        return 0.0 if tokens >= 1 else (1 - tokens) / self.limit.rate

    def take(self, key: str) -> None:
        """Take one token; call only after wait_s(key) answered 0."""
        bucket = self._refilled(key, self.clock())
        bucket.tokens -= 1
        self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._shrink()

    def _refilled(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            return _Bucket(float(self.limit.burst), now)
        elapsed = max(0.0, now - bucket.stamp)
        bucket.tokens = min(float(self.limit.burst), bucket.tokens + elapsed * self.limit.rate)
        bucket.stamp = now
        return bucket

    def _shrink(self) -> None:
        now = self.clock()
        for key in [k for k in self._buckets if self._refilled(k, now).tokens >= self.limit.burst]:
            del self._buckets[key]
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)


def take_all(key: str, limiters: Sequence[RateLimiter]) -> tuple[float, RateLimiter | None]:
    """Take a token from every limiter for `key`, or from none: (0, None) when taken, else
    (seconds to wait, the limiter that refused), rounded up to milliseconds."""
    for limiter in limiters:
        wait = limiter.wait_s(key)
        if wait > 0:
            return math.ceil(wait * 1000) / 1000, limiter
    for limiter in limiters:
        limiter.take(key)
    return 0.0, None
