"""A least-recently-used cache bounded by bytes, with one load per key at a time.

Models (about 90 MB each for MiniLM) and bundle indexes (embeddings plus text) differ in size
by orders of magnitude, so the bound is in bytes, estimated by the loader. Concurrent requests
for a key that is loading wait for that one load instead of starting their own (a model load
or a bundle's embedding pass takes seconds). The entry just inserted is never evicted, so a
bound smaller than one entry still serves, holding that one entry.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

__all__ = ["ByteLRU", "CacheStats"]

Loader = Callable[[], Awaitable[tuple[Any, int]]]
"""Returns (value, estimated size in bytes)."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ByteLRU:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._loading: dict[Hashable, asyncio.Future[Any]] = {}
        self.total_bytes = 0
        self.stats = CacheStats()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        return list(self._entries)

    async def get(self, key: Hashable, load: Loader) -> Any:
        """The value under key, loading it (once, however many callers wait) when absent."""
        if key in self._entries:
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return self._entries[key][0]
        pending = self._loading.get(key)
        if pending is not None:
            self.stats.hits += 1
            return await asyncio.shield(pending)
        self.stats.misses += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value, size = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody logs "never retrieved"
            raise
        else:
            self.put(key, value, size)
            future.set_result(value)
            return value
        finally:
            self._loading.pop(key, None)

    def put(self, key: Hashable, value: Any, size: int) -> None:
        if key in self._entries:
            self.total_bytes -= self._entries.pop(key)[1]
        self._entries[key] = (value, size)
        self.total_bytes += size
        while self.total_bytes > self.max_bytes and len(self._entries) > 1:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.total_bytes -= evicted
            self.stats.evictions += 1

    def discard(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.total_bytes -= entry[1]
