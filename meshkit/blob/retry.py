"""One retry loop for every cloud backend: classify, back off with jitter, give up clearly.

Backends turn their SDK's retries off and call through here, so that every store retries the
same faults (5xx, throttling, connection errors, timeouts) the same number of times, bounds
every attempt with a timeout, and reports failures in the same error types without secrets.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from meshkit.errors import BlobError, BlobNotFoundError, BlobUnavailableError

__all__ = ["ErrorModel", "Fault", "RetryPolicy", "call"]

T = TypeVar("T")


class Fault(enum.Enum):
    """What an SDK exception means for the caller."""

    TRANSIENT = "transient"  # worth another attempt: 5xx, 408, 429, connection reset, timeout
    NOT_FOUND = "not found"  # the object is missing
    CONFLICT = "conflict"  # a precondition (create-only, pinned version) failed
    OTHER = "other"  # permanent: credentials, permissions, a missing bucket, a bad request


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to try one call.

    `attempts` bounds the tries, `timeout` bounds each try (seconds, on top of the SDK's own
    socket timeouts), and the wait before try n is uniform in [0, min(max_delay,
    base_delay * 2**n)] ("full jitter"), so that many clients failing together spread out.
    """

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    timeout: float = 120.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.timeout <= 0 or self.base_delay < 0:
            raise ValueError("RetryPolicy needs attempts >= 1, timeout > 0, base_delay >= 0")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2**attempt))


@dataclass(frozen=True)
class ErrorModel:
    """A backend's knowledge of its SDK's exceptions."""

    classify: Callable[[BaseException], Fault]
    # Must describe an exception without its message, which may carry URLs with signatures.
    describe: Callable[[BaseException], str]


async def call(
    op: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    errors: ErrorModel,
    what: str,
    key: str,
    conflict: Callable[[str], BlobError] | None = None,
) -> T:
    """Run op, retrying transient faults, and translate what finally comes out.

    NOT_FOUND becomes BlobNotFoundError(key); CONFLICT becomes conflict(key) when given (for a
    create-only write: BlobExistsError), else a BlobError; transient faults that outlast the
    policy become BlobUnavailableError; anything else a BlobError naming `what`. The SDK's
    exception is not chained: its text may hold request URLs or headers.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            async with asyncio.timeout(policy.timeout):
                return await op()
        except BlobError:
            raise
        except TimeoutError:
            fault, detail = Fault.TRANSIENT, f"no answer within {policy.timeout:g} s"
        except Exception as exc:
            fault, detail = errors.classify(exc), errors.describe(exc)
        if fault is Fault.TRANSIENT:
            if attempt < policy.attempts:
                await asyncio.sleep(policy.backoff(attempt))
                continue
            raise BlobUnavailableError(
                f"{what}: still failing after {policy.attempts} attempts ({detail})"
            ) from None
        if fault is Fault.NOT_FOUND:
            raise BlobNotFoundError(key) from None
        if fault is Fault.CONFLICT and conflict is not None:
            raise conflict(key) from None
        raise BlobError(f"{what} failed: {detail}") from None
    raise AssertionError("unreachable: the loop returns or raises")
