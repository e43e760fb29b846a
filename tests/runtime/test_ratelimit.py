"""Token buckets per key on a clock the test moves: bursts, refill, and a bounded table."""

from __future__ import annotations

import pytest

from meshkit.ratelimit import Limit, RateLimiter, take_all


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(Limit(rate=2.0, burst=3), clock=clock)
    for _ in range(3):
        assert limiter.wait_s("a") == 0
        limiter.take("a")
    assert limiter.wait_s("a") == pytest.approx(0.5)
    assert limiter.wait_s("b") == 0  # another key has its own bucket
    clock.now += 0.25
    assert limiter.wait_s("a") == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.wait_s("a") == 0
    clock.now += 100  # refills up to the burst, no further
    for _ in range(3):
        limiter.take("a")
    assert limiter.wait_s("a") > 0


def test_take_all_takes_from_every_limiter_or_from_none() -> None:
    clock = Clock()
    wide = RateLimiter(Limit(rate=1.0, burst=5), clock=clock)
    narrow = RateLimiter(Limit(rate=0.1, burst=1), clock=clock)
    assert take_all("a", [wide, narrow]) == (0.0, None)
    wait, refused = take_all("a", [wide, narrow])
    assert refused is narrow and wait == pytest.approx(10.0)
    # The refused call took nothing from the wider limiter: four tokens are left there.
    for _ in range(4):
        assert take_all("a", [wide]) == (0.0, None)
    assert take_all("a", [wide])[1] is wide


def test_the_table_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(Limit(rate=1.0, burst=2), clock=clock, max_keys=10)
    for i in range(1000):
        limiter.take(f"caller-{i}")
        clock.now += 0.001
    assert len(limiter) <= 10
    # Dropping a full bucket changes nothing: a new one starts full.
    clock.now += 10
    limiter.take("late")
    assert limiter.wait_s("caller-0") == 0


def test_a_limit_must_allow_something() -> None:
    with pytest.raises(ValueError):
        Limit(rate=0, burst=1)
    with pytest.raises(ValueError):
        Limit(rate=1, burst=0)
    assert Limit(rate=0.1, burst=5).describe() == "one every 10 s, in bursts of up to 5"
    assert Limit(rate=5, burst=50).describe() == "5 a second, in bursts of up to 50"
