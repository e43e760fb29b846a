"""The writers' half of the retention fence: after a write that references blobs, keep them
from a retention sweep that is deleting meanwhile.

A sweep (gateway/retention.py) decides from a snapshot which blobs nothing references, then
deletes them. A refresh may start referencing one of those in between without writing it
again: blobs are content-addressed, so a repository whose content went back to an older
state, a bundle equal to an older one, or a cached body that a 304 keeps, is the old object.
Ages prove nothing here, so the two sides fence, in the mirror order of DeleteUser's
(docs/architecture.md, "Retention"):

- the sweep marks itself (`sweep` in cm_retention) before it reads any reference; then, for
  each blob it decided on, creates the blob's hold as `doomed` (create-only) and deletes the
  blob only if that create won; it removes the hold once the blob is gone;
- a writer writes its reference first (outcome, plan, pointer, cache entry) and looks for the
  mark after. No mark: any sweep starts later and reads the reference. A mark: it creates each
  blob's hold as `kept`; a create that wins keeps the blob from this sweep. A create that
  loses to `doomed` means the blob is or will be deleted: the writer waits until the sweep
  releases the hold, then stores the blob again when it has the bytes, or reports it lost.
Every look is a leader read, as the forget fence's are.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from meshkit.erasure import exists_now, read_now
from meshkit.errors import ConflictError
from meshkit.topology import Buckets

__all__ = ["DOOMED", "KEPT", "SWEEP_KEY", "RetentionFence", "hold_key"]

log = logging.getLogger(__name__)

SWEEP_KEY = "sweep"
KEPT = b"kept"
DOOMED = b"doomed"

Restore = Callable[[str], Awaitable[object]]
"""Stores a blob again from the bytes the writer still holds."""


def hold_key(blob_key: str) -> str:
    """The cm_retention key of a blob's hold (a blob key is not a valid KV key)."""
    return f"hold.{hashlib.sha256(blob_key.encode()).hexdigest()}"


class RetentionFence:
    """One per writer; binds cm_retention only once it meets a sweep (a look costs one read)."""

    def __init__(self, js: JetStreamContext, *, wait_s: float = 60.0) -> None:
        self.js = js
        self.wait_s = wait_s
        self._kv: KeyValue | None = None

    async def keep(self, blob_keys: Iterable[str], restore: Restore | None = None) -> list[str]:
        """Call after writing a reference to blob_keys. Returns the keys a sweep deleted
        that could not be restored (none when restore is given, or no sweep runs)."""
        keys = sorted({k for k in blob_keys if k})
        if not keys or not await exists_now(self.js, Buckets.RETENTION, SWEEP_KEY):
            return []
        lost = []
        for key in keys:
            if not await self._hold(key):
                await self._released(key)
                if restore is None:
                    lost.append(key)
                    continue
                await restore(key)
                log.info("stored %s again: a retention sweep had doomed it", key)
        return lost

    async def _hold(self, key: str) -> bool:
        """True when the blob is held kept (by us or another writer), False when doomed."""
        if self._kv is None:
            self._kv = await self.js.key_value(Buckets.RETENTION.name)
        while True:
            try:
                await self._kv.create(hold_key(key), KEPT)
                return True
            except KeyWrongLastSequenceError:
                found = await read_now(self.js, Buckets.RETENTION, hold_key(key))
                if found is None:
                    continue  # released between our create and our read: try again
                return found[0] != DOOMED

    async def _released(self, key: str) -> None:
        """Wait until the sweep has deleted a doomed blob and released its hold."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        for delay in _pauses():
            if not await exists_now(self.js, Buckets.RETENTION, hold_key(key)):
                return
            if loop.time() > deadline:
                raise ConflictError(
                    f"a retention sweep still holds {key} doomed after {self.wait_s:.0f} s"
                )
            await asyncio.sleep(delay)


def _pauses() -> Iterator[float]:
    """The pauses between looks at a doomed hold: 20 ms, doubling up to a second (a sweep
    releases a hold right after its delete)."""
    delay = 0.02
    while True:
        yield delay
        delay = min(delay * 2, 1.0)
