"""What one caller may take from a gateway: refreshes per second, and open watches.

Kept in the memory of each gateway replica (docs/security.md, "Limits"): a refresh is a
few KV writes and a publish, and a shared counter would add a KV round trip to every one of
them to save nothing an operator cannot get by dividing the limits by the replicas. A caller
is a token's `sub` (meshkit.auth.Principal.subject); with authentication off every caller
is the same "anonymous" one.

- Refreshes: a token bucket per caller (CONTEXTMESH_REFRESH_RATE / _BURST), and a stricter
  one for `force` (CONTEXTMESH_FORCE_RATE / _BURST), which makes every repository be fetched
  again. A forced refresh takes from both, or from neither when one refuses.
- Watches: at most CONTEXTMESH_MAX_WATCHES_PER_JOB open WatchJob streams of one job and
  CONTEXTMESH_MAX_WATCHES_PER_CALLER of one caller; a slot is held while the stream is open.

Going past a limit raises LimitExceeded (RESOURCE_EXHAUSTED, HTTP 429), saying when to retry.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from meshkit.config import LimitSettings
from meshkit.errors import LimitExceeded
from meshkit.ratelimit import Clock, Limit, RateLimiter, take_all

__all__ = ["EdgeLimits", "WatchSlots"]


class WatchSlots:
    """Counts open watches per job and per caller; `take` refuses one past either cap."""

    def __init__(self, *, per_job: int, per_caller: int) -> None:
        self.per_job = per_job
        self.per_caller = per_caller
        self.jobs: Counter[str] = Counter()
        self.callers: Counter[str] = Counter()

    def take(self, job_id: str, caller: str) -> Callable[[], None]:
        """Take a slot of the job and of the caller, or raise LimitExceeded; returns the
        function that gives them back (calling it again does nothing)."""
        if self.jobs[job_id] >= self.per_job:
            raise LimitExceeded(
                f"job {job_id} already has {self.per_job} open watches, the most a gateway "
                "serves for one job; close one, or poll GetJob"
            )
        if self.callers[caller] >= self.per_caller:
            raise LimitExceeded(
                f"this caller already has {self.per_caller} open watches, the most a gateway "
                "serves for one caller; close one before watching another job"
            )
        self.jobs[job_id] += 1
        self.callers[caller] += 1
        held = True

        def release() -> None:
            nonlocal held
            if not held:
                return
            held = False
            for counter, key in ((self.jobs, job_id), (self.callers, caller)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]

        return release


class EdgeLimits:
    """The gateway's per-caller limits, from the settings."""

    def __init__(self, settings: LimitSettings, *, clock: Clock = time.monotonic) -> None:
        self.refreshes = RateLimiter(
            Limit(settings.refresh_rate, settings.refresh_burst), clock=clock
        )
        self.forces = RateLimiter(Limit(settings.force_rate, settings.force_burst), clock=clock)
        self.watches = WatchSlots(
            per_job=settings.watches_per_job, per_caller=settings.watches_per_caller
        )

    def admit_refresh(self, caller: str, *, force: bool) -> None:
        """Count a refresh of `caller`, or raise LimitExceeded saying when to retry."""
        limiters = [self.refreshes, self.forces] if force else [self.refreshes]
        wait_s, refused = take_all(caller, limiters)
        if refused is None:
            return
        what = "forced refreshes" if refused is self.forces else "refreshes"
        raise LimitExceeded(
            f"too many {what} from this caller (at most {refused.limit.describe()}); "
            f"retry in {wait_s:g} s",
            retry_after_s=wait_s,
        )
