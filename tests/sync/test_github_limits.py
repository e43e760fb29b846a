"""GithubSource under GitHub's limits and failures: rate limits, retry-after, secondary limits,
5xx, timeouts and connection errors."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest

from syncsvc.sources.base import RepoListing, SourceError
from syncsvc.sources.github import GithubSource
from syncsvc.sources.github_limits import GithubPacing, RateLimiter, parse_retry_after
from tests.support.fake_github import FakeGithub
from tests.support.polling import until

MakeSource = Callable[..., GithubSource]
CAP = 1024 * 1024


def world(gh: FakeGithub, repos: int = 1) -> list[RepoListing]:
    """Repositories with a README and a context file, and their listings (no discovery)."""
    gh.add_user("octo")
    for i in range(repos):
        gh.add_repo(f"octo/r{i}", {"README.md": f"# r{i}", ".repo-context.json": "{}"})
    return [RepoListing(full_name=f"octo/r{i}", fingerprint="f") for i in range(repos)]


# -- the limiter on its own (a fake clock) -------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def limiter(fake: FakeTime, reserve: int = 10, **pacing: float) -> RateLimiter:
    return RateLimiter(
        reserve=reserve,
        pacing=GithubPacing(reset_margin_s=0.5, **pacing),  # type: ignore[arg-type]
        clock=fake.clock,
        sleep=fake.sleep,
    )


def budget(remaining: int, reset: float) -> dict[str, str]:
    return {"x-ratelimit-remaining": str(remaining), "x-ratelimit-reset": str(reset)}


async def test_limiter_spreads_the_budget_below_the_reserve_evenly_until_the_reset() -> None:
    fake = FakeTime()
    lim = limiter(fake)
    lim.observe(budget(5, 1010))
    sent = []
    for remaining in (4, 3, 2, 1):
        async with lim.slot():
            sent.append(fake.now)
        lim.observe(budget(remaining, 1010))

    assert sent == [1000.0, 1002.0, 1004.0, 1006.0]


async def test_limiter_does_not_wait_above_the_reserve() -> None:
    fake = FakeTime()
    lim = limiter(fake, reserve=10)
    lim.observe(budget(100, 1010))
    for _ in range(5):
        async with lim.slot():
            pass
    assert fake.sleeps == []


async def test_limiter_waits_for_the_reset_when_nothing_remains() -> None:
    fake = FakeTime()
    lim = limiter(fake)
    lim.observe(budget(0, 1030))

    async with lim.slot():
        assert fake.now == pytest.approx(1030.5)  # the reset plus the margin
    assert lim.remaining is None  # a new window: unknown until the next response


async def test_limiter_counts_requests_in_flight_as_spent() -> None:
    fake = FakeTime()
    lim = limiter(fake, reserve=0)
    lim.observe(budget(1, 1030))
    async with lim.slot(), lim.slot():  # the one budgeted request is still in flight
        assert fake.now == pytest.approx(1030.5)


async def test_limiter_ignores_stale_windows_and_keeps_the_lowest_count() -> None:
    fake = FakeTime()
    lim = limiter(fake)
    lim.observe(budget(40, 1010))
    lim.observe(budget(45, 1010))  # an older response arriving late
    assert lim.remaining == 40
    lim.observe(budget(4999, 1005))  # from a window that already ended
    assert lim.remaining == 40
    lim.observe(budget(4999, 1020))  # the next window
    assert lim.remaining == 4999
    lim.observe(
        {
            "x-ratelimit-remaining": "1",
            "x-ratelimit-reset": "1020",
            "x-ratelimit-resource": "search",
        }
    )
    assert lim.remaining == 4999


async def test_limiter_pause_holds_back_every_request() -> None:
    fake = FakeTime()
    lim = limiter(fake)
    lim.pause(7)
    async with lim.slot():
        assert fake.now == 1007.0


async def test_limiter_refuses_a_wait_longer_than_the_policy_allows() -> None:
    fake = FakeTime()
    lim = limiter(fake, max_wait_s=60)
    lim.observe(budget(0, 5000))
    with pytest.raises(SourceError) as caught:
        async with lim.slot():
            pass
    assert caught.value.transient is True
    assert caught.value.retry_after_s == pytest.approx(4000.5)  # the task comes back then
    assert "rate limit" in str(caught.value)
    assert fake.sleeps == []


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    date = "Sun, 01 Nov 2026 10:00:30 GMT"
    assert parse_retry_after({"retry-after": date}, now=1793527200.0) == 30.0


# -- rate limits against the stand-in ------------------------------------------------------


async def test_waits_for_the_reset_instead_of_running_into_the_limit(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    listings = world(fake_github, 4)
    source = make_github_source(rate_limit_reserve=0)
    fake_github.set_rate_limit(4, window_s=1)
    reset = fake_github.rate_reset

    results = [await source.fetch(r, extra_files=(), max_file_bytes=CAP) for r in listings]

    assert all(r.readme.status == "ok" and r.context.status == "ok" for r in results)
    log = fake_github.requests()
    assert [r.status for r in log] == [200] * 8  # no request ran into a 403
    assert all(r.started >= reset for r in log[4:])


async def test_slows_down_below_the_reserve_to_spread_the_budget(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    listings = world(fake_github, 5)
    source = make_github_source(rate_limit_reserve=10, concurrency=2)
    fake_github.set_rate_limit(10, window_s=1)
    # Learn the budget with one request, then time nine more.
    await source.fetch(listings[0], extra_files=(), max_file_bytes=CAP)
    window = fake_github.rate_reset - time.time()
    started = time.monotonic()

    for listing in listings[1:]:
        await source.fetch(listing, extra_files=(), max_file_bytes=CAP)

    elapsed = time.monotonic() - started
    # Eight requests spread over what was left of the window: about (6/8) of it passes
    # before the last one goes, where unpaced they would take milliseconds.
    assert elapsed >= 0.5 * window
    assert fake_github.count(status=403) == 0
    assert fake_github.count() == 10


async def test_a_far_reset_hands_the_task_back_with_the_wait(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    [listing] = world(fake_github)
    fake_github.set_rate_limit(1, window_s=3600)
    source = make_github_source(rate_limit_reserve=0, concurrency=1)

    with pytest.raises(SourceError) as caught:
        await source.fetch(listing, extra_files=(), max_file_bytes=CAP)

    assert caught.value.transient is True
    assert caught.value.retry_after_s is not None
    assert 3590 < caught.value.retry_after_s < 3610
    assert fake_github.count() == 1  # the second request was never sent


@pytest.mark.parametrize("status", [403, 429])
async def test_retry_after_is_honoured(
    status: int, fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    [listing] = world(fake_github)
    fake_github.fail(status, path="readme", times=1, retry_after=0.3, message="slow down")
    source = make_github_source()
    started = time.monotonic()

    fetched = await source.fetch(listing, extra_files=(), max_file_bytes=CAP)

    assert fetched.readme.status == "ok"
    assert time.monotonic() - started >= 0.3
    assert [r.status for r in fake_github.requests(kind="readme")] == [status, 200]


async def test_retry_after_pauses_the_other_requests_too(
    fake_github: FakeGithub, make_github_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    [one, two] = world(fake_github, 2)
    fake_github.throttle(429, retry_after=0.5, repo="octo/r0", path="readme")
    source = make_github_source(concurrency=4)

    first = asyncio.create_task(source.fetch(one, extra_files=(), max_file_bytes=CAP))
    # The source logs the retry in the same step that pauses every request: once the line is
    # there, the pause is in force.
    await until(lambda: "retry 1 of" in caplog.text, what="the source to read the 429")
    await source.fetch(two, extra_files=(), max_file_bytes=CAP)
    await first

    throttled = fake_github.requests(status=429)[0]
    others = fake_github.requests(repo="octo/r1")
    assert len(others) == 2
    assert all(r.started >= throttled.finished + 0.4 for r in others)


@pytest.mark.parametrize("retry_after", [None, 0.2])
async def test_secondary_rate_limits_are_waited_out(
    retry_after: float | None, fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    [listing] = world(fake_github)
    fake_github.secondary_limit(path="contents", retry_after=retry_after)
    source = make_github_source()  # secondary_wait_s=0.1 when GitHub names no wait
    started = time.monotonic()

    fetched = await source.fetch(listing, extra_files=(), max_file_bytes=CAP)

    assert fetched.context.status == "ok"
    assert time.monotonic() - started >= (retry_after or 0.1)
    assert [r.status for r in fake_github.requests(kind="contents")] == [403, 200]


async def test_a_retry_after_longer_than_the_policy_allows_fails_transiently(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    [listing] = world(fake_github)
    fake_github.throttle(429, retry_after=3600, path="readme")
    with pytest.raises(SourceError) as caught:
        await make_github_source().fetch(listing, extra_files=(), max_file_bytes=CAP)
    assert caught.value.transient is True
    assert caught.value.retry_after_s == 3600
    assert fake_github.count(kind="readme") == 1


async def test_a_permission_403_is_not_retried(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    [listing] = world(fake_github)
    fake_github.forbid(path="readme")

    with pytest.raises(SourceError) as caught:
        await make_github_source().fetch(listing, extra_files=(), max_file_bytes=CAP)

    assert caught.value.transient is False
    assert "403" in str(caught.value) and "Resource not accessible" in str(caught.value)
    assert fake_github.count(kind="readme") == 1


# -- retries -------------------------------------------------------------------------------


async def test_5xx_is_retried_until_it_passes(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    [listing] = world(fake_github)
    fake_github.fail(502, path="contents", times=2)

    fetched = await make_github_source().fetch(listing, extra_files=(), max_file_bytes=CAP)

    assert fetched.context.status == "ok"
    assert [r.status for r in fake_github.requests(kind="contents")] == [502, 502, 200]


async def test_always_500_fails_transiently_after_max_retries(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    [listing] = world(fake_github)
    fake_github.fail(500, path="contents")

    with pytest.raises(SourceError) as caught:
        await make_github_source(max_retries=2).fetch(listing, extra_files=(), max_file_bytes=CAP)

    assert caught.value.transient is True
    assert caught.value.retry_after_s is None  # failed for now: not a wait to sit out
    assert "HTTP 500" in str(caught.value) and "3 attempts" in str(caught.value)
    assert fake_github.count(kind="contents") == 3


async def test_a_failing_discovery_is_a_transient_error_too(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    world(fake_github)
    fake_github.fail(503, path="/repos")
    with pytest.raises(SourceError) as caught:
        await make_github_source(max_retries=1).list_repositories("octo")
    assert caught.value.transient is True
    assert fake_github.count(kind="list") == 2


async def test_timeouts_are_retried(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    [listing] = world(fake_github)
    fake_github.slow(0.6, path="readme", times=1)

    fetched = await make_github_source(timeout_s=0.2).fetch(
        listing, extra_files=(), max_file_bytes=CAP
    )

    assert fetched.readme.status == "ok"
    # The stand-in logs the abandoned request when its delay is over.
    await until(lambda: fake_github.count(kind="readme") == 2)


async def test_a_server_that_always_times_out_fails_transiently(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    [listing] = world(fake_github)
    fake_github.slow(1.0, path="readme")

    with pytest.raises(SourceError) as caught:
        await make_github_source(timeout_s=0.1, max_retries=1).fetch(
            listing, extra_files=(), max_file_bytes=CAP
        )

    assert caught.value.transient is True
    assert "timed out" in str(caught.value)


async def test_connection_errors_are_retried_then_transient(make_github_source: MakeSource) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed

    source = make_github_source(api_url=f"http://127.0.0.1:{port}", max_retries=2)
    with pytest.raises(SourceError) as caught:
        await source.list_repositories("octo")

    assert caught.value.transient is True
    assert "ConnectError" in str(caught.value) and "3 attempts" in str(caught.value)
