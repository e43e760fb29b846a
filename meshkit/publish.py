"""Publishing tasks: protobuf payload, Nats-Msg-Id for de-duplication, trace context.

Each publish is a PRODUCER span whose context goes into the headers, so the worker's
CONSUMER span is its child (meshkit.telemetry).

A publish is retried while the stream has no leader (a cluster re-election takes seconds),
under meshkit.retry.PUBLISH, so callers see either an acknowledged publish or an error after
the deadline. A stream at its byte bound (meshkit/topology.py: work streams discard new)
answers 503 as well, but that is not transient: it raises StreamFullError at once, naming the
stream and what to do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from google.protobuf.message import Message
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, ServiceUnavailableError
from opentelemetry.trace import SpanKind

from meshkit.errors import StreamFullError
from meshkit.retry import PUBLISH, Attempts
from meshkit.telemetry import inject_headers, task_attributes, tracer

__all__ = ["MSG_ID_HEADER", "TYPE_HEADER", "StreamFullError", "publish_task"]

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
TYPE_HEADER = "Contextmesh-Type"
_TRANSIENT = (NoRespondersError, NatsTimeoutError, ServiceUnavailableError, asyncio.TimeoutError)
STORE_LIMIT_ERR_CODE = 10077
"""JetStream's "maximum messages/bytes exceeded": the stream refused a new message."""


def _full(exc: APIError, subject: str) -> StreamFullError:
    return StreamFullError(
        f"the stream for {subject} is full ({exc.description}); the task was not accepted and "
        "none already accepted was dropped: retry when workers have drained it, or raise its "
        "bound with CONTEXTMESH_JS_MAX_BYTES"
    )


async def publish_task(
    js: JetStreamContext,
    subject: str,
    task: Message,
    *,
    msg_id: str,
    deadline_s: float | None = None,
    extra_headers: dict[str, str] | None = None,
) -> PubAck:
    """Publish task once (JetStream drops a repeat of msg_id inside the duplicate window).

    Transient failures are retried for `deadline_s` (default: PUBLISH's 30 s)."""
    with tracer(__name__).start_as_current_span(
        f"publish {subject}", kind=SpanKind.PRODUCER
    ) as span:
        if span.is_recording():  # the attributes cost nothing when tracing is off
            span.set_attributes(
                {
                    "messaging.destination.name": subject,
                    "messaging.message.id": msg_id,
                    **task_attributes(task),
                }
            )
        headers = inject_headers(
            {MSG_ID_HEADER: msg_id, TYPE_HEADER: task.DESCRIPTOR.full_name, **(extra_headers or {})}
        )
        return await _publish(js, subject, task, headers, deadline_s)


async def _publish(
    js: JetStreamContext,
    subject: str,
    task: Message,
    headers: dict[str, str],
    deadline_s: float | None,
) -> PubAck:
    payload = task.SerializeToString(deterministic=True)
    policy = PUBLISH if deadline_s is None else dataclasses.replace(PUBLISH, deadline_s=deadline_s)
    attempts = Attempts(policy)
    while True:
        try:
            return await js.publish(
                subject, payload, headers=headers, timeout=policy.attempt_timeout_s
            )
        except APIError as exc:
            if exc.err_code == STORE_LIMIT_ERR_CODE:
                raise _full(exc, subject) from None
            if not isinstance(exc, ServiceUnavailableError) and exc.code not in (503, 504):
                raise
            delay = _retry_or_raise(exc, attempts, subject)
        except _TRANSIENT as exc:
            delay = _retry_or_raise(exc, attempts, subject)
        await asyncio.sleep(delay)


def _retry_or_raise(exc: Exception, attempts: Attempts, subject: str) -> float:
    """The wait before the next try, or exc raised again once the policy gives up."""
    delay = attempts.next_delay_s()
    if delay is None:
        raise exc
    log.warning("publish to %s failed (%s); retrying", subject, type(exc).__name__)
    return delay
