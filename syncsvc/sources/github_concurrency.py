"""A bound on requests in flight whose size may change while requests wait.

GitHub allows about 100 concurrent requests per token; the sync replicas share 80 of them
(GITHUB_CONCURRENCY_BUDGET), each taking its part of it by the number of replicas alive now
(syncsvc.replicas). As replicas come and go the part changes: `limit` is asked again at
every acquire and every release, so a grown part lets waiting requests go at once and a
shrunk one lets the requests in flight finish and holds new ones back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["AdjustableLimit"]


class AdjustableLimit:
    """At most `limit()` holders at once; `limit` is read whenever it may matter."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._holders = 0
        self._changed = asyncio.Condition()

    @property
    def holders(self) -> int:
        return self._holders

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._holders < max(1, self._limit()))
            self._holders += 1
        try:
            yield
        finally:
            async with self._changed:
                self._holders -= 1
                self._changed.notify_all()
