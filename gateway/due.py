"""Firing due KV entries: the one loop behind schedules and debounced webhook refreshes.

Each entry of a bucket says when it comes due. Every gateway follows the bucket through a KV
watch (its current entries, then every change) and keeps each key's due time in a heap; when
one comes due it calls `fire(key)`. Several gateways fire the same key: `fire` re-reads the
entry and claims it by compare-and-set, so that only the gateway whose write lands acts. An
entry that a write moved later, or that was deleted, is dropped from the heap as it surfaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable

from nats.js.kv import KeyValue

from meshkit.jobs import stop_watcher

__all__ = ["DueEntries"]

log = logging.getLogger(__name__)


class DueEntries:
    """Calls `fire(key)` for each entry of `kv` once its due time (`due_at(value)`, seconds
    since the epoch) has come."""

    def __init__(
        self,
        kv: KeyValue,
        due_at: Callable[[bytes], float],
        fire: Callable[[str], Awaitable[object]],
        *,
        clock: Callable[[], float],
        idle_s: float = 30.0,
        retry_s: float = 5.0,
    ) -> None:
        self.kv = kv
        self.due_at = due_at
        self.fire = fire
        self.clock = clock
        self.idle_s = idle_s
        """The longest the loop sleeps: it wakes sooner when an entry comes due or any entry
        changes."""
        self.retry_s = retry_s
        """How soon a key whose firing failed (NATS unreachable, say) is fired again."""
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._changed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Fire due entries until stop is set."""
        watcher = await self.kv.watchall()
        follow = asyncio.create_task(self._follow(watcher))
        try:
            while not stop.is_set():
                for key in self._pop_due():
                    try:
                        await self.fire(key)
                    except Exception:  # one key's failure never stops the others
                        log.exception("firing %s failed; trying again", key)
                        self._at(key, self.clock() + self.retry_s)
                await self._sleep(stop)
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            await stop_watcher(watcher)

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        """Keep the due times in step with the bucket."""
        while True:
            entry = await watcher.updates(timeout=None)
            if entry is None:  # the end of the entries that existed when the watch began
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self._due.pop(entry.key, None)
            else:
                self._at(entry.key, self.due_at(entry.value))
            self._changed.set()

    def _at(self, key: str, seconds: float) -> None:
        self._due[key] = seconds
        heapq.heappush(self._heap, (seconds, key))

    def _pop_due(self) -> list[str]:
        """Keys due now (heap entries made stale by a later write are dropped as they
        surface)."""
        now = self.clock()
        due = []
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            if self._due.get(key) == at:
                due.append(key)
        return due

    async def _sleep(self, stop: asyncio.Event) -> None:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        wait = self.idle_s
        if self._heap:
            wait = min(wait, max(0.0, self._heap[0][0] - self.clock()))
        self._changed.clear()
        changed = asyncio.ensure_future(self._changed.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                {changed, stopped}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            changed.cancel()
            stopped.cancel()
