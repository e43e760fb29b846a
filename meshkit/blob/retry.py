"""One retry loop for every cloud backend: classify, back off with jitter, give up clearly.

Backends turn their SDK's retries off and call through here, so that every store retries the
same faults (5xx, throttling, connection errors, timeouts) under one RetryPolicy
(meshkit.retry.BLOB_CALL unless a store is given another), bounds every attempt with its
timeout, and reports failures in the same error types without secrets. SocketTimeouts are the
finer bounds each backend hands its SDK's transport. Each call, retries included, is one
CLIENT span (meshkit.telemetry) named after the operation, with the key as an attribute.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry.trace import SpanKind

from meshkit.errors import BlobError, BlobNotFoundError, BlobUnavailableError
from meshkit.retry import Attempts, RetryPolicy
from meshkit.telemetry import tracer

__all__ = ["ErrorModel", "Fault", "SocketTimeouts", "call"]

T = TypeVar("T")


class Fault(enum.Enum):
    """What an SDK exception means for the caller."""

    TRANSIENT = "transient"  # worth another attempt: 5xx, 408, 429, connection reset, timeout
    NOT_FOUND = "not found"  # the object is missing
    CONFLICT = "conflict"  # a precondition (create-only, pinned version) failed
    OTHER = "other"  # permanent: credentials, permissions, a missing bucket, a bad request


@dataclass(frozen=True, kw_only=True)
class SocketTimeouts:
    """The SDK transport's own bounds, under the policy's bound on a whole attempt."""

    connect_s: float = 10.0
    """Longest wait to open a connection."""
    read_s: float = 60.0
    """Longest wait for the next bytes of a response."""


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
    # `what` ends with the key (backends write "azure upload 'key'"): the span name keeps
    # the operation only, so names stay few.
    name = f"blob {what.removesuffix(f' {key!r}')}"
    attributes = {"contextmesh.blob.key": key}
    with tracer(__name__).start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
        return await _with_retries(op, policy, errors, what, key, conflict)


async def _with_retries(
    op: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    errors: ErrorModel,
    what: str,
    key: str,
    conflict: Callable[[str], BlobError] | None,
) -> T:
    attempts = Attempts(policy)
    while True:
        try:
            async with asyncio.timeout(policy.attempt_timeout_s):
                return await op()
        except BlobError:
            raise
        except TimeoutError:
            bound = policy.attempt_timeout_s
            fault = Fault.TRANSIENT
            detail = "timed out" if bound is None else f"no answer within {bound:g} s"
        except Exception as exc:
            fault, detail = errors.classify(exc), errors.describe(exc)
        if fault is Fault.TRANSIENT:
            delay = attempts.next_delay_s()
            if delay is not None:
                await asyncio.sleep(delay)
                continue
            raise BlobUnavailableError(
                f"{what}: still failing after {attempts.failed} attempts ({detail})"
            ) from None
        if fault is Fault.NOT_FOUND:
            raise BlobNotFoundError(key) from None
        if fault is Fault.CONFLICT and conflict is not None:
            raise conflict(key) from None
        raise BlobError(f"{what} failed: {detail}") from None
