"""How the GitHub source paces itself: backoff between retries and GitHub's rate limits.

GitHub grants each token a budget of requests per window (`x-ratelimit-remaining`, reset at
the epoch second `x-ratelimit-reset`) and, on top of it, secondary limits that answer 403 or
429, usually with `retry-after`. One RateLimiter per credential and process sees every
response sent with that credential, so a pause that GitHub asks of one request holds back all
of them, as GitHub expects. With a SharedBudget (github_budget) the limiter also tells the
other replicas what it saw and reads what they saw, so the pause and the budget hold across
replicas too; its own memory stays the fast path between reads.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from meshkit.retry import GITHUB_REQUEST, RetryPolicy
from syncsvc.sources.base import SourceError
from syncsvc.sources.github_budget import BudgetState, SharedBudget, merge

__all__ = ["GithubPacing", "RateLimiter", "parse_retry_after"]


@dataclass(frozen=True, kw_only=True)
class GithubPacing:
    """Timings of retries and waits. The defaults suit GitHub; tests shorten them."""

    retry: RetryPolicy = GITHUB_REQUEST
    """The waits after a 5xx, timeout or connection error. How many retries a request gets
    is CONTEXTMESH_GITHUB_MAX_RETRIES (GithubSettings.max_retries), not this `attempts`."""
    secondary_wait_s: float = 60.0
    """Pause after a secondary rate limit without retry-after (GitHub: at least a minute),
    doubled on each repeat."""
    max_wait_s: float = 60.0
    """Longest single wait for a rate limit; beyond it the call fails with a SourceError
    whose retry_after_s says how long, so a worker hands its task back until then instead
    of holding it. Well inside the DISCOVER and SYNC deadlines (120 s), which would
    otherwise cut the wait and count it as a failed attempt."""
    reset_margin_s: float = 1.0
    """Extra wait after x-ratelimit-reset: the header is rounded to whole seconds."""
    share_every_s: float = 1.0
    """How stale this replica's view of the shared budget may grow before a slot reads it
    again, and how often plain news (a lower `remaining`) is published. A pause, a new
    window and a budget below the reserve are read and published at every request."""


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from a retry-after header (delta-seconds or an HTTP date), or None."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RateLimiter:
    """The process's view of GitHub's primary rate limit and of any pause GitHub asked for.

    Every request goes through `slot()`: it waits while a pause is in force, spreads the
    remaining budget evenly until the reset once fewer than `reserve` requests remain, and
    waits for the reset when none remain. Requests in flight count as spent until their
    response arrives (a 304 does not count at GitHub, so the estimate errs on the safe side).
    """

    def __init__(
        self,
        *,
        reserve: int,
        pacing: GithubPacing,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        shared: SharedBudget | None = None,
    ) -> None:
        self._reserve = reserve
        self._shared = shared
        self._last_read = float("-inf")
        self._last_published = float("-inf")
        self._published = BudgetState()
        """The state this limiter last published or read: what the others already know."""
        self._pacing = pacing
        self._clock = clock
        self._sleep = sleep
        self._remaining: int | None = None
        self._reset: float | None = None
        self._in_flight = 0
        self._paused_until = 0.0
        self._next_slot = 0.0

    @property
    def remaining(self) -> int | None:
        """Requests left in the current window as GitHub last said, or None when unknown."""
        return self._remaining

    @property
    def state(self) -> BudgetState:
        """This limiter's view: what it publishes to the shared budget."""
        return BudgetState(self._remaining, self._reset, self._paused_until)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a turn to send one request; the request is in flight inside the block."""
        while (delay := self._delay(await self._refreshed())) > 0:
            if delay > self._pacing.max_wait_s:
                raise SourceError(
                    f"GitHub rate limit: the next request could go only in {delay:.0f} s "
                    f"(at {_utc(self._clock() + delay)}); giving up for now",
                    transient=True,
                    retry_after_s=delay,
                )
            await self._sleep(delay)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the budget from a response's x-ratelimit-* headers (any status)."""
        resource = headers.get("x-ratelimit-resource")
        if resource is not None and resource != "core":
            return
        try:
            remaining = int(headers["x-ratelimit-remaining"])
            reset = float(headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return  # GitHub Enterprise with rate limiting off sends neither
        if self._reset is None or reset > self._reset:
            self._remaining, self._reset = remaining, reset  # a new window
        elif reset == self._reset and self._remaining is not None:
            # Responses arrive out of order; within a window the budget only shrinks.
            self._remaining = min(self._remaining, remaining)

    def pause(self, seconds: float) -> None:
        """Hold back every request of the process for `seconds` (retry-after, secondary)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def share(self) -> None:
        """Publish what this limiter learnt since it last did, when the others need it now
        (a pause, a new window, a budget below the reserve) or `share_every_s` has passed."""
        if self._shared is None:
            return
        state, known = self.state, self._published
        if state == known:
            return
        now = self._clock()
        urgent = (
            state.paused_until > known.paused_until
            or state.reset != known.reset
            or (state.remaining is not None and state.remaining < self._reserve)
        )
        if not urgent and now - self._last_published < self._pacing.share_every_s:
            return
        self._last_published = now
        merged = await self._shared.publish(state)
        if merged is not None:
            self._absorb(merged)

    async def _refreshed(self) -> float:
        """The time now, after taking in the shared budget if this view of it is stale."""
        now = self._clock()
        if self._shared is None:
            return now
        low = self._remaining is not None and self._remaining - self._in_flight < self._reserve
        if low or now - self._last_read >= self._pacing.share_every_s:
            self._last_read = now
            seen = await self._shared.read()
            if seen is not None:
                self._absorb(seen)
            now = self._clock()
        return now

    def _absorb(self, seen: BudgetState) -> None:
        """Take in what the other replicas saw (github_budget.merge decides what wins)."""
        merged = merge(self.state, seen)
        self._remaining, self._reset, self._paused_until = (
            merged.remaining,
            merged.reset,
            merged.paused_until,
        )
        self._published = seen

    def _delay(self, now: float) -> float:
        """Seconds to wait before the next request may go; 0 takes a turn."""
        if self._paused_until > now:
            return self._paused_until - now
        if self._remaining is None or self._reset is None:
            return 0.0
        if now >= self._reset:
            self._remaining = self._reset = None  # the window is over: a fresh budget
            return 0.0
        left = self._remaining - self._in_flight
        if left <= 0:
            return self._reset - now + self._pacing.reset_margin_s
        if left < self._reserve:
            # Spread what is left evenly over the rest of the window.
            if self._next_slot > now:
                return self._next_slot - now
            self._next_slot = now + (self._reset - now) / left
        return 0.0


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")
