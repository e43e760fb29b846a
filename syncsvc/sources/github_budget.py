"""GitHub's budget for one credential, shared by every sync replica through a KV bucket.

GitHub counts requests per token, not per process: twenty replicas syncing with one token
spend one budget. Each replica's RateLimiter stays the fast path (it decides every slot from
memory) and, through a SharedBudget, publishes what GitHub's headers told it and reads what
the others saw. The entry (key = Credential.id, never the token) holds:

    remaining     requests left in the window, as the lowest recent header said
    reset         the epoch second the window ends (x-ratelimit-reset)
    paused_until  the epoch second before which nobody sends (retry-after, secondary limits)

Merging is not last-writer-wins: headers arrive out of order across replicas, so a replica
that read an older response must not raise `remaining` again. Within one window (same
reset) the lower `remaining` wins; a later reset starts a new window and its count wins
whatever it is; an earlier reset is stale and loses. A pause only ever grows. Writes are
compare-and-set on the entry's revision, retried on a conflict, and skipped when the merge
changes nothing, so the bucket takes only news.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, replace

from nats.js.errors import KeyNotFoundError, KeyValueError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

__all__ = ["BudgetState", "SharedBudget", "merge"]

log = logging.getLogger(__name__)

_CAS_ATTEMPTS = 5
KV_TIMEOUT_S = 2.0
"""A KV call slower than this is skipped: the local limiter carries on alone meanwhile."""


@dataclass(frozen=True)
class BudgetState:
    """What is known of one credential's budget. None: not known yet."""

    remaining: int | None = None
    reset: float | None = None
    paused_until: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(
            {"remaining": self.remaining, "reset": self.reset, "paused_until": self.paused_until}
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> BudgetState:
        doc = json.loads(data)
        remaining, reset = doc.get("remaining"), doc.get("reset")
        return cls(
            remaining=int(remaining) if isinstance(remaining, int) else None,
            reset=float(reset) if isinstance(reset, int | float) else None,
            paused_until=float(doc.get("paused_until") or 0.0),
        )


def merge(old: BudgetState, new: BudgetState) -> BudgetState:
    """The budget that both views together prove (see the module docstring)."""
    paused_until = max(old.paused_until, new.paused_until)
    if new.reset is None or new.remaining is None:
        return replace(old, paused_until=paused_until)
    if old.reset is None or old.remaining is None or new.reset > old.reset:
        return BudgetState(new.remaining, new.reset, paused_until)
    if new.reset == old.reset:
        return BudgetState(min(old.remaining, new.remaining), old.reset, paused_until)
    return replace(old, paused_until=paused_until)  # an older window's news


class SharedBudget:
    """One credential's entry in the budget bucket."""

    def __init__(self, kv: KeyValue, credential_id: str) -> None:
        self._kv = kv
        self._key = credential_id

    def __repr__(self) -> str:
        return f"SharedBudget(key='{self._key}')"

    async def read(self) -> BudgetState | None:
        """The shared view, or None when there is none or NATS did not answer in time."""
        try:
            entry = await asyncio.wait_for(self._kv.get(self._key), KV_TIMEOUT_S)
        except KeyNotFoundError:
            return None
        except (KeyValueError, TimeoutError, OSError) as exc:
            log.warning("shared GitHub budget %s unreadable: %s", self._key, type(exc).__name__)
            return None
        return _decode(entry.value)

    async def publish(self, seen: BudgetState) -> BudgetState | None:
        """Merge what this replica saw into the shared entry; the merged view, or None when
        NATS could not take it (the local view stays in force)."""
        try:
            return await asyncio.wait_for(self._publish(seen), KV_TIMEOUT_S)
        except (KeyValueError, TimeoutError, OSError) as exc:
            log.warning("shared GitHub budget %s not updated: %s", self._key, type(exc).__name__)
            return None

    async def _publish(self, seen: BudgetState) -> BudgetState | None:
        for _ in range(_CAS_ATTEMPTS):
            try:
                entry = await self._kv.get(self._key)
            except KeyNotFoundError:
                try:
                    await self._kv.create(self._key, seen.to_json())
                    return seen
                except KeyWrongLastSequenceError:
                    continue  # another replica created it first: merge with theirs
            current = _decode(entry.value) or BudgetState()
            merged = merge(current, seen)
            if merged == current:
                return current
            try:
                await self._kv.update(self._key, merged.to_json(), last=entry.revision)
                return merged
            except KeyWrongLastSequenceError:
                continue
        return None


def _decode(data: bytes | None) -> BudgetState | None:
    if not data:
        return None
    try:
        return BudgetState.from_json(data)
    except (ValueError, TypeError, AttributeError):
        return None  # an unreadable entry is replaced by the next publish
