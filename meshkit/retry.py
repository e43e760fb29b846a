"""How every retry loop in the mesh waits: one policy type, one backoff, named presets.

A RetryPolicy says how many attempts an operation gets (or none: until a deadline, or
forever), how long one attempt may take, and how long to wait after each failure: the wait
starts at `base_delay_s`, doubles with each further failure up to `max_delay_s`, and is then
jittered. The callers keep their own judgement of which failures are worth another attempt;
Attempts keeps the count and says when the policy gives up.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BLOB_CALL",
    "DECLARE",
    "GITHUB_REQUEST",
    "NATS_CONNECT",
    "PUBLISH",
    "Attempts",
    "Jitter",
    "RetryPolicy",
]

_MAX_DOUBLINGS = 64
"""Far past any ceiling a policy sets; keeps 2**n a finite float for an endless retry loop."""
_RNG = random.Random()


class Jitter(enum.Enum):
    """How a wait is drawn below its ceiling."""

    NONE = "none"
    """Exactly the ceiling: one process waiting for its server, with nobody to collide with."""
    FULL = "full"
    """Uniform in [0, ceiling]: many clients that failed together spread out the most."""
    EQUAL = "equal"
    """Uniform in [ceiling / 2, ceiling]: spread out, yet never straight back."""

    def draw(self, ceiling: float, rng: random.Random) -> float:
        """One wait under `ceiling`, in seconds."""
        if self is Jitter.FULL:
            return rng.uniform(0.0, ceiling)
        if self is Jitter.EQUAL:
            return rng.uniform(ceiling / 2, ceiling)
        return ceiling


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often, how long and how far apart to try one operation."""

    attempts: int | None
    """Tries in all, the first included; None retries until the deadline (or forever)."""
    base_delay_s: float
    """Ceiling of the wait after the first failure; it doubles with each further one."""
    max_delay_s: float
    """Largest ceiling of any wait."""
    jitter: Jitter
    attempt_timeout_s: float | None = None
    """Bound on one attempt, for callers that enforce one; None leaves it to the transport."""
    deadline_s: float | None = None
    """Seconds from the first attempt after which a failure is final; None: only `attempts`
    bounds the retries."""

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("RetryPolicy: attempts must be at least 1 (None: no bound)")
        if not 0 <= self.base_delay_s <= self.max_delay_s:
            raise ValueError("RetryPolicy: needs 0 <= base_delay_s <= max_delay_s")
        for name in ("attempt_timeout_s", "deadline_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"RetryPolicy: {name} must be positive (None: no bound)")

    def delay_s(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after `failures` failed attempts (1 after the first) before the next."""
        doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2**doublings)
        return self.jitter.draw(ceiling, rng or _RNG)


class Attempts:
    """The failures of one operation under a policy, counted from its first attempt."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._policy = policy
        self.failed = 0
        """Attempts that failed so far."""
        self._clock = clock
        self._rng = rng
        self._give_up_at = None if policy.deadline_s is None else clock() + policy.deadline_s

    def next_delay_s(self) -> float | None:
        """Count one more failed attempt; the wait before the next, or None when the policy
        allows no other (every attempt spent, or the deadline passed)."""
        self.failed += 1
        if self._policy.attempts is not None and self.failed >= self._policy.attempts:
            return None
        if self._give_up_at is not None and self._clock() >= self._give_up_at:
            return None
        return self._policy.delay_s(self.failed, self._rng)


BLOB_CALL = RetryPolicy(
    attempts=5, base_delay_s=0.2, max_delay_s=5.0, jitter=Jitter.FULL, attempt_timeout_s=120.0
)
"""One call of a cloud blob store (meshkit/blob/retry.py): transient faults retried with
full jitter, since every replica hits the same store, and each try bounded to 2 minutes."""

GITHUB_REQUEST = RetryPolicy(attempts=5, base_delay_s=0.5, max_delay_s=30.0, jitter=Jitter.EQUAL)
"""One GET against GitHub (syncsvc/sources/github_http.py) after a 5xx, timeout or connection
error, with waits that keep the workers sharing a token apart. GithubHttp takes the number of
retries from CONTEXTMESH_GITHUB_MAX_RETRIES (these 5 attempts are its default, 4, plus the
first) and each request's timeout from CONTEXTMESH_GITHUB_TIMEOUT_S; a wait GitHub names
itself (retry-after) takes precedence."""

PUBLISH = RetryPolicy(
    attempts=None,
    base_delay_s=0.1,
    max_delay_s=2.0,
    jitter=Jitter.NONE,
    attempt_timeout_s=5.0,
    deadline_s=30.0,
)
"""Publishing a task while its stream has no leader (meshkit/publish.py): a cluster's
re-election takes seconds, so retry briskly until 30 s have passed."""

DECLARE = RetryPolicy(
    attempts=None, base_delay_s=0.5, max_delay_s=5.0, jitter=Jitter.EQUAL, deadline_s=120.0
)
"""Declaring the topology while a fresh cluster elects its JetStream leaders
(meshkit/topology.py): creating an R3 stream can time out or answer 503 until they settle.
Declaring is idempotent, so the whole of it is tried again."""

NATS_CONNECT = RetryPolicy(
    attempts=None, base_delay_s=0.2, max_delay_s=5.0, jitter=Jitter.NONE, attempt_timeout_s=2.0
)
"""A process connecting to NATS at start (meshkit/nats_client.py): it cannot work without the
server, so it tries every few seconds until the server answers."""
