"""The model cache is bounded by bytes, evicts least recently used, loads each key once."""

from __future__ import annotations

import asyncio

import pytest

from searchsvc.cache import ByteLRU
from tests.support.polling import until


def sized(value: str, size: int):  # type: ignore[no-untyped-def]
    async def load() -> tuple[str, int]:
        return value, size

    return load


async def test_entries_are_evicted_least_recently_used_first_under_the_bound() -> None:
    cache = ByteLRU(max_bytes=100)
    assert await cache.get("a", sized("A", 40)) == "A"
    assert await cache.get("b", sized("B", 40)) == "B"
    assert await cache.get("a", sized("other", 40)) == "A"  # a hit, and now most recent
    await cache.get("c", sized("C", 40))  # 120 > 100: b, the least recent, goes
    assert cache.keys() == ["a", "c"] and cache.total_bytes == 80
    assert cache.stats.evictions == 1 and cache.stats.hits == 1 and cache.stats.misses == 3
    await cache.get("huge", sized("H", 500))  # bigger than the bound: kept alone
    assert cache.keys() == ["huge"] and cache.total_bytes == 500
    assert cache.total_bytes <= 500


async def test_concurrent_requests_share_one_load() -> None:
    cache = ByteLRU(max_bytes=1000)
    loads = 0
    release = asyncio.Event()

    async def slow() -> tuple[str, int]:
        nonlocal loads
        loads += 1
        await release.wait()
        return "model", 10

    waiters = [asyncio.create_task(cache.get("m", slow)) for _ in range(5)]
    # Every caller has asked while the load is still running: one miss, four joining it.
    await until(lambda: cache.stats.misses + cache.stats.hits == 5, what="five callers")
    release.set()
    assert await asyncio.gather(*waiters) == ["model"] * 5
    assert loads == 1


async def test_a_failed_load_is_not_cached() -> None:
    cache = ByteLRU(max_bytes=1000)

    async def broken() -> tuple[str, int]:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        await cache.get("m", broken)
    assert "m" not in cache
    assert await cache.get("m", sized("ok", 1)) == "ok"
