"""The shared retry policy: the presets' schedules, jitter bounds, unbounded attempts and the
deadline, and publishing under PUBLISH."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Awaitable
from typing import cast

import pytest
from contextmesh.task.v1 import task_pb2
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import ServiceUnavailableError

from meshkit.config import GithubSettings
from meshkit.publish import publish_task
from meshkit.retry import (
    BLOB_CALL,
    GITHUB_REQUEST,
    NATS_CONNECT,
    PUBLISH,
    Attempts,
    Jitter,
    RetryPolicy,
)


def ceilings(policy: RetryPolicy, failures: int) -> list[float]:
    """The un-jittered waits after failures 1..n."""
    plain = dataclasses.replace(policy, jitter=Jitter.NONE)
    return [plain.delay_s(n) for n in range(1, failures + 1)]


def test_publish_retries_briskly_for_30_seconds() -> None:
    assert ceilings(PUBLISH, 7) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert PUBLISH.jitter is Jitter.NONE and PUBLISH.delay_s(3) == pytest.approx(0.4)
    assert (PUBLISH.attempts, PUBLISH.deadline_s, PUBLISH.attempt_timeout_s) == (None, 30.0, 5.0)


def test_nats_connect_retries_forever_every_few_seconds() -> None:
    assert ceilings(NATS_CONNECT, 7) == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert NATS_CONNECT.jitter is Jitter.NONE
    assert (NATS_CONNECT.attempts, NATS_CONNECT.deadline_s) == (None, None)
    assert NATS_CONNECT.attempt_timeout_s == 2.0


def test_blob_calls_get_five_bounded_attempts_with_full_jitter() -> None:
    assert ceilings(BLOB_CALL, 6) == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0])
    assert (BLOB_CALL.attempts, BLOB_CALL.attempt_timeout_s) == (5, 120.0)
    rng = random.Random(1)
    for failures, ceiling in enumerate(ceilings(BLOB_CALL, 6), start=1):
        waits = [BLOB_CALL.delay_s(failures, rng) for _ in range(200)]
        assert all(0.0 <= wait <= ceiling for wait in waits)
        # Full jitter uses the whole range, the bottom half included.
        assert min(waits) < ceiling / 4 and max(waits) > ceiling * 3 / 4


def test_github_requests_back_off_in_the_upper_half_of_each_ceiling() -> None:
    expected = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert ceilings(GITHUB_REQUEST, 8) == pytest.approx(expected)
    rng = random.Random(7)
    for failures, ceiling in enumerate(expected, start=1):
        waits = [GITHUB_REQUEST.delay_s(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 100  # jittered, so workers that failed together spread out
    # The preset's attempts are those of CONTEXTMESH_GITHUB_MAX_RETRIES' default.
    assert GITHUB_REQUEST.attempts == GithubSettings().max_retries + 1


def test_a_bounded_policy_gives_up_after_its_last_attempt() -> None:
    attempts = Attempts(dataclasses.replace(BLOB_CALL, attempts=3))
    assert attempts.next_delay_s() is not None
    assert attempts.next_delay_s() is not None
    assert attempts.next_delay_s() is None
    assert attempts.failed == 3


def test_an_unbounded_policy_never_gives_up_and_its_wait_stays_at_the_cap() -> None:
    attempts = Attempts(NATS_CONNECT)
    waits = [attempts.next_delay_s() for _ in range(5000)]
    assert None not in waits
    assert waits[-1] == NATS_CONNECT.max_delay_s  # no overflow after thousands of doublings


def test_a_deadline_ends_retries_however_many_attempts_remain() -> None:
    now = [100.0]
    attempts = Attempts(dataclasses.replace(PUBLISH, deadline_s=1.0), clock=lambda: now[0])
    now[0] = 100.9
    assert attempts.next_delay_s() == pytest.approx(0.1)
    now[0] = 101.0
    assert attempts.next_delay_s() is None
    assert attempts.failed == 2


@pytest.mark.parametrize(
    "change",
    [
        {"attempts": 0},
        {"base_delay_s": -1.0},
        {"base_delay_s": 3.0, "max_delay_s": 2.0},
        {"attempt_timeout_s": 0.0},
        {"deadline_s": -5.0},
    ],
)
def test_a_policy_that_cannot_work_is_refused(change: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        dataclasses.replace(PUBLISH, **change)  # type: ignore[arg-type]


class LeaderlessStream:
    """Stands in for a JetStream context whose stream has no leader for its first `outage`
    publishes (a real re-election takes seconds to arrange); records when each came."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.calls: list[tuple[float, float | None]] = []

    async def publish(self, subject: str, payload: bytes, **options: object) -> PubAck:
        timeout = options["timeout"]
        assert timeout is None or isinstance(timeout, float)
        self.calls.append((time.monotonic(), timeout))
        if len(self.calls) <= self.outage:
            raise ServiceUnavailableError(code=503, description="no leader")
        return PubAck(stream="S", seq=len(self.calls))


def publish_to(stream: LeaderlessStream, **options: float) -> Awaitable[PubAck]:
    js = cast(JetStreamContext, stream)
    return publish_task(js, "s.task", task_pb2.DeadLetter(), msg_id="x", **options)


async def test_publish_rides_out_a_re_election_with_the_preset_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []

    async def no_sleep(delay: float) -> None:  # the waits asked for, not the clock's noise
        waits.append(delay)

    monkeypatch.setattr("meshkit.publish.asyncio.sleep", no_sleep)
    stream = LeaderlessStream(outage=3)
    assert (await publish_to(stream)).seq == 4
    assert waits == [0.1, 0.2, 0.4]
    assert {timeout for _, timeout in stream.calls} == {PUBLISH.attempt_timeout_s}


async def test_publish_gives_up_at_its_deadline() -> None:
    stream = LeaderlessStream(outage=1000)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError):
        await publish_to(stream, deadline_s=0.5)
    # Failures at about 0, 0.1, 0.3 and 0.7 s (later on a loaded machine): it kept trying
    # until the deadline, and the first failure past it was final.
    assert time.monotonic() - started >= 0.5
    last_two = [at for at, _ in stream.calls[-2:]]
    assert last_two[0] - started < 0.5 <= last_two[1] - started
