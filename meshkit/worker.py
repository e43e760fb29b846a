"""The worker loop every consumer runs: fetch, handle, then exactly one of ack / nak / term.

    handler returns                  -> ack
    handler raises RetryLater(d)     -> nak(delay=d)   (not a failure: e.g. rate limited)
    handler raises PermanentError    -> park in DEADLETTER, term
    handler raises JobNotFoundError  -> ack: the job is gone (forgotten or expired), its
                                        work with it
    handler raises anything else,    -> nak(delay=retry_backoff_s[n-1]) after attempt n, or on
    or runs past the deadline           the last delivery park in DEADLETTER and term
    payload undecodable or invalid   -> park in DEADLETTER, term (it can never succeed)

While a handler runs, the loop sends in-progress every third of the stream's ack wait, so
work in progress is never redelivered; a worker that dies or hangs stops sending and
JetStream redelivers after the ack wait. Every attempt has a deadline: past it the handler
is cancelled (a training thread is told to stop) and the attempt counts as failed, so a
handler stuck on an await cannot hold its slot forever. A task whose worker crashed on
every delivery never reaches the last-delivery branch: the server announces it with a
MAX_DELIVERIES advisory, which the worker's own watcher turns into the same dead letter.
The handler's `on_dead_letter` runs in both cases, so a service can record the failure on
the job (it must be idempotent: every replica sees the advisory). It gets a `Failure`: the
full reason goes into the dead letter for operators; only a PermanentError's own message,
written for the caller, may reach a job. A letter whose job turns out to be gone once it
is parked is taken back: a forgotten user's tasks leave no letters.

Each delivery is a CONSUMER span continuing the trace in the message headers (a redelivery
joins the same trace), and the task's log lines carry its job_id (meshkit.logging).

Metrics (meshkit.metrics): each delivery counts under its stream with its outcome from the
table above (ack; retry after a failure; deferred for RetryLater; parked), and its handling
time; every dead letter written counts once, whichever path or replica wrote it; and each
worker exports its consumer's pending and ack-pending counts, read from the server.

Delivery is at least once: handlers must be idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import protovalidate
from contextmesh.task.v1 import task_pb2
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry.trace import SpanKind

from meshkit import metrics
from meshkit.erasure import exists_now
from meshkit.errors import JobNotFoundError
from meshkit.logging import bind_job_id
from meshkit.metrics import TaskOutcome
from meshkit.publish import MSG_ID_HEADER, publish_task
from meshkit.telemetry import extract_context, task_attributes, tracer
from meshkit.topology import DEADLETTER, DEADLETTER_SUBJECT_PREFIX, Buckets, WorkStream
from meshkit.validation import describe_violations

__all__ = [
    "DeadlineExceeded",
    "Delivery",
    "Failure",
    "PermanentError",
    "RetryLater",
    "TaskHandler",
    "Worker",
    "decode_task",
    "park",
    "watch_max_deliveries",
]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Message)

LAG_POLL_S = 5.0
"""How often a worker reads its consumer's pending counts for metrics: one small request."""


class PermanentError(Exception):
    """The task can never succeed as it is; park it now instead of retrying. Its message is
    written for the caller (it may reach the job); `code` is a job ErrorCode, when one fits."""

    def __init__(self, message: str, *, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Failure:
    """Why a task was parked, for the dead-letter hook."""

    reason: str
    """For operators: the last error, internal text included (it goes into the letter)."""
    public: str | None = None
    """For the caller: a PermanentError's message; None when the failure was internal (an
    exception, a deadline, a crash), whose text must not reach a client."""
    code: int = 0
    """The PermanentError's job ErrorCode, 0 when none."""


class DeadlineExceeded(Exception):
    """An attempt ran past its stream's deadline and was abandoned; it counts as failed."""


class RetryLater(Exception):
    """Try the task again after delay_s without treating it as a failure."""

    def __init__(self, delay_s: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay_s:.1f}s")
        self.delay_s = delay_s


@dataclass
class Delivery:
    """One delivery of a task."""

    msg: Msg
    attempt: int
    """1 on the first delivery."""
    max_deliver: int

    @property
    def is_last(self) -> bool:
        return self.attempt >= self.max_deliver

    async def in_progress(self) -> None:
        """Reset the ack timer (the loop also does this on its own while the handler runs)."""
        await self.msg.in_progress()


class TaskHandler(Protocol[T]):
    """What a Worker runs over a work stream: one service's handling of one kind of task."""

    @property
    def task_type(self) -> type[T]:
        """The message every delivery is decoded (and validated) as."""
        ...

    async def handle(self, task: T, delivery: Delivery) -> None:
        """Do the task; returning acks it, raising follows the table at the top."""
        ...

    async def on_dead_letter(self, task: T | None, failure: Failure) -> None:
        """Record on the job what a parked task means (None: its payload is undecodable).
        Runs once per replica for a crashed task: it must be idempotent."""
        ...


def decode_task(message_type: type[T], data: bytes) -> T:
    """Parse and validate a task; PermanentError says what is wrong with it."""
    task = message_type()
    try:
        task.ParseFromString(data)
    except DecodeError as exc:
        raise PermanentError(f"undecodable {message_type.DESCRIPTOR.full_name}: {exc}") from None
    try:
        protovalidate.validate(task)
    except protovalidate.ValidationError as exc:
        problems = describe_violations(exc)
        raise PermanentError(f"invalid {message_type.DESCRIPTOR.full_name}: {problems}") from None
    return task


async def park(
    js: JetStreamContext,
    ws: WorkStream,
    *,
    payload: bytes,
    stream_seq: int,
    msg_id: str,
    job_id: str,
    reason: str,
    deliveries: int,
) -> int:
    """Copy a task into DEADLETTER; returns the letter's sequence there (0 when its job is
    gone, and nothing is kept). Keyed by the task's stream sequence, so parking twice is
    harmless (the second answers the first's)."""
    letter = task_pb2.DeadLetter(
        subject=ws.subject,
        payload=payload,
        reason=reason[:2000],
        deliveries=deliveries,
        job_id=job_id,
        msg_id=msg_id,
    )
    ack = await publish_task(
        js,
        f"{DEADLETTER_SUBJECT_PREFIX}.{ws.stream}",
        letter,
        msg_id=f"dl:{ws.stream}:{stream_seq}",
    )
    if job_id and not await exists_now(js, Buckets.JOBS, job_id):
        # Forgotten while it failed: take the letter back. DeleteUser purges a user's jobs
        # before it sweeps their letters, so a letter parked after the sweep is caught here.
        await js.delete_msg(DEADLETTER, ack.seq)
        return 0
    if not ack.duplicate:  # the replicas that park the same task write one letter
        metrics.DEAD_LETTERS.labels(ws.stream).inc()
    return ack.seq


class Worker(Generic[T]):
    """Runs a handler over one work stream's durable consumer with bounded concurrency."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        stream: WorkStream,
        handler: TaskHandler[T],
        *,
        concurrency: int | Callable[[], int] = 8,
        fetch_timeout_s: float = 1.0,
    ) -> None:
        """`concurrency` is how many tasks may run at once: a number, or a function asked
        before each fetch (syncsvc's follows the replicas alive now)."""
        self.nc = nc
        self.js = js
        self.ws = stream
        self.handler = handler
        self._limit = concurrency if callable(concurrency) else (lambda: concurrency)
        self.fetch_timeout_s = fetch_timeout_s
        self._inflight: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()
        self.handled = 0

    @property
    def concurrency(self) -> int:
        """How many tasks may run at once now (at least 1)."""
        return max(1, self._limit())

    async def run(self, stop: asyncio.Event, *, grace_s: float = 20.0) -> None:
        """Fetch and handle until stop is set, then let in-flight tasks finish (or nak them).

        Also parks the tasks whose every delivery crashed a worker (`watch_max_deliveries`),
        so no service can run a worker and forget its dead letters."""
        metrics.declare_task_stream(self.ws.stream)
        stop_watch = await watch_max_deliveries(self.nc, self.js, self.ws, self.handler)
        sub = await self.js.pull_subscribe_bind(durable=self.ws.consumer, stream=self.ws.stream)
        lag = asyncio.create_task(self._export_lag(stop))
        try:
            while not stop.is_set():
                free = await self._free_slots()
                try:
                    msgs = await sub.fetch(free, timeout=self.fetch_timeout_s)
                except (TimeoutError, NatsTimeoutError):
                    msgs = []
                except Exception as exc:  # server unavailable during a re-election, etc.
                    log.warning("fetch from %s failed: %s", self.ws.stream, exc)
                    msgs = []
                    await asyncio.sleep(0.5)
                for msg in msgs:
                    task = asyncio.create_task(self._handle(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._finished)
            if self._inflight:
                _, pending = await asyncio.wait(self._inflight, timeout=grace_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            lag.cancel()
            await asyncio.gather(lag, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await stop_watch()

    async def _export_lag(self, stop: asyncio.Event) -> None:
        """Export the consumer's backlog as the server counts it, every LAG_POLL_S."""
        pending = metrics.CONSUMER_PENDING.labels(self.ws.stream, self.ws.consumer)
        ack_pending = metrics.CONSUMER_ACK_PENDING.labels(self.ws.stream, self.ws.consumer)
        while not stop.is_set():
            try:
                info = await self.js.consumer_info(self.ws.stream, self.ws.consumer)
            except Exception as exc:  # NATS unavailable a moment: the next poll tries again
                log.debug("consumer info of %s failed: %s", self.ws.consumer, exc)
            else:
                pending.set(info.num_pending or 0)
                ack_pending.set(info.num_ack_pending or 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LAG_POLL_S)

    async def _free_slots(self) -> int:
        """Wait until fewer tasks than the limit run; how many more may start. A limit that
        grows meanwhile is seen within a second, without waiting for a task to end."""
        while (free := self.concurrency - len(self._inflight)) <= 0:
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), 1.0)
        return free

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._freed.set()

    async def _handle(self, msg: Msg) -> None:
        meta = msg.metadata
        delivery = Delivery(msg, meta.num_delivered, self.ws.max_deliver)
        msg_id = (msg.headers or {}).get(MSG_ID_HEADER, "")
        task: T | None = None
        metrics.count_delivery(self.ws.stream, delivery.attempt)
        started = time.perf_counter()
        outcome: TaskOutcome | None = None
        heartbeat = asyncio.create_task(self._heartbeat(msg, self.ws.ack_wait_s / 3))
        try:
            with tracer(__name__).start_as_current_span(
                f"handle {self.ws.subject}",
                context=extract_context(msg.headers),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.destination.name": self.ws.subject,
                    "messaging.message.id": msg_id,
                    "contextmesh.stream": self.ws.stream,
                    "contextmesh.delivery": delivery.attempt,
                },
            ) as span:
                task = decode_task(self.handler.task_type, msg.data)
                named = task_attributes(task)
                span.set_attributes(named)
                bind_job_id(named.get("contextmesh.job_id"))
                try:
                    async with asyncio.timeout(self.ws.deadline_s) as deadline:
                        await self.handler.handle(task, delivery)
                except TimeoutError as exc:
                    if not deadline.expired():
                        raise
                    raise DeadlineExceeded(
                        f"the attempt ran past its deadline of {self.ws.deadline_s:g} s "
                        f"(CONTEXTMESH_{self.ws.stream}_DEADLINE_S)"
                    ) from exc
        except RetryLater as exc:
            await msg.nak(delay=exc.delay_s)
            outcome = TaskOutcome.DEFERRED
        except JobNotFoundError as exc:
            # The job is gone (forgotten, expired): nobody waits for its work, and parking it
            # would keep what DeleteUser removed. JobStore confirms a miss with the leader.
            log.info("task %s dropped: %s", msg_id, exc)
            await msg.ack()
            outcome = TaskOutcome.ACK
        except PermanentError as exc:
            failure = Failure(str(exc), public=str(exc), code=exc.code)
            await self._dead_letter(msg, task, msg_id, failure, delivery.attempt)
            outcome = TaskOutcome.PARKED
        except asyncio.CancelledError:
            # Shutting down: give the task straight back instead of waiting for ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:
            reason = (
                str(exc) if isinstance(exc, DeadlineExceeded) else f"{type(exc).__name__}: {exc}"
            )
            if delivery.is_last:
                log.error("task %s failed its last delivery: %s", msg_id, reason)
                await self._dead_letter(msg, task, msg_id, Failure(reason), delivery.attempt)
                outcome = TaskOutcome.PARKED
            else:
                delay = self.ws.retry_delay(delivery.attempt)
                log.warning(
                    "task %s failed (delivery %d of %d), retrying in %gs: %s",
                    msg_id,
                    delivery.attempt,
                    self.ws.max_deliver,
                    delay,
                    reason,
                    exc_info=None if isinstance(exc, DeadlineExceeded) else exc,
                )
                await msg.nak(delay=delay)
                outcome = TaskOutcome.RETRY
        else:
            await msg.ack()
            self.handled += 1
            outcome = TaskOutcome.ACK
        finally:
            heartbeat.cancel()
            metrics.TASK_DURATION.labels(self.ws.stream).observe(time.perf_counter() - started)
            if outcome is not None:  # None: handed back at shutdown, or the ack/nak failed
                metrics.TASKS.labels(self.ws.stream, outcome).inc()

    async def _heartbeat(self, msg: Msg, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _dead_letter(
        self, msg: Msg, task: T | None, msg_id: str, failure: Failure, deliveries: int
    ) -> None:
        job_id = task.meta.job_id if task is not None and task.HasField("meta") else ""  # type: ignore[attr-defined]
        await park(
            self.js,
            self.ws,
            payload=msg.data,
            stream_seq=msg.metadata.sequence.stream,
            msg_id=msg_id,
            job_id=job_id,
            reason=failure.reason,
            deliveries=deliveries,
        )
        await self.handler.on_dead_letter(task, failure)
        await msg.term()


async def watch_max_deliveries(
    nc: Client,
    js: JetStreamContext,
    ws: WorkStream,
    handler: TaskHandler[T],
) -> Callable[[], Awaitable[None]]:
    """Park tasks whose every delivery went unacknowledged (the worker crashed or hung), and
    tell the handler.

    Returns an async function that stops watching.
    """
    subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{ws.stream}.{ws.consumer}"

    async def on_advisory(advisory: Msg) -> None:
        try:
            event = json.loads(advisory.data)
            seq = int(event["stream_seq"])
            deliveries = int(event.get("deliveries", ws.max_deliver))
            stored = await js.get_msg(ws.stream, seq)
        except NotFoundError:
            return  # another replica parked and removed it already
        except Exception as exc:
            log.error("cannot park after MAX_DELIVERIES advisory on %s: %s", ws.stream, exc)
            return
        reason = (
            f"delivered {deliveries} times without an acknowledgement "
            "(the worker crashed or hung each time)"
        )
        task: T | None = None
        with contextlib.suppress(PermanentError):
            task = decode_task(handler.task_type, stored.data or b"")
        msg_id = (stored.headers or {}).get(MSG_ID_HEADER, "")
        job_id = task.meta.job_id if task is not None else ""  # type: ignore[attr-defined]
        await park(
            js,
            ws,
            payload=stored.data or b"",
            stream_seq=seq,
            msg_id=msg_id,
            job_id=job_id,
            reason=reason,
            deliveries=deliveries,
        )
        await handler.on_dead_letter(task, Failure(reason))
        with contextlib.suppress(NotFoundError):
            await js.delete_msg(ws.stream, seq)
        log.error("parked task %s: %s", msg_id, reason)

    sub = await nc.subscribe(subject, cb=on_advisory)
    return sub.unsubscribe
