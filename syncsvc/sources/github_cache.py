"""What the GitHub source remembers per URL, so that a 304 can stand in for a whole answer.

A body alone is not always enough: a listing page also needs its next-page link (a 304 need
not repeat the Link header), a README its file name, and a file that was over the size cap
only the fact (so that an unchanged large file costs a 304, not a download). Each entry is
stored in the shared ResponseCache as one body: a versioned JSON header line, then the
payload. Anything unreadable counts as absent, and a failing cache only costs the 304s: the
cache is an optimisation, never a reason for a fetch to fail.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from syncsvc.sources.base import CachedResponse, ResponseCache

__all__ = ["Entry", "EntryCache"]

logger = logging.getLogger(__name__)

_MAGIC = b"gh1 "


@dataclass(frozen=True)
class Entry:
    """A remembered answer: the ETag that validates it, facts about it, and its payload."""

    etag: str
    meta: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""

    def encode(self) -> CachedResponse:
        header = json.dumps(self.meta, separators=(",", ":"), sort_keys=True).encode()
        return CachedResponse(etag=self.etag, body=_MAGIC + header + b"\n" + self.payload)

    @classmethod
    def decode(cls, cached: CachedResponse) -> Entry | None:
        body = cached.body
        if not body.startswith(_MAGIC) or not cached.etag:
            return None
        header, sep, payload = body[len(_MAGIC) :].partition(b"\n")
        if not sep:
            return None
        try:
            meta = json.loads(header)
        except ValueError:
            return None
        return cls(etag=cached.etag, meta=meta, payload=payload) if isinstance(meta, dict) else None


class EntryCache:
    """Entries over a ResponseCache, keyed by URL."""

    def __init__(self, cache: ResponseCache) -> None:
        self._cache = cache

    async def get(self, url: str) -> Entry | None:
        try:
            cached = await self._cache.get(url)
        except Exception as exc:
            logger.warning(
                "response cache read failed (%s); asking GitHub in full", type(exc).__name__
            )
            return None
        return Entry.decode(cached) if cached is not None else None

    async def put(self, url: str, entry: Entry) -> None:
        try:
            await self._cache.put(url, entry.encode())
        except Exception as exc:
            logger.warning(
                "response cache write failed (%s); continuing without", type(exc).__name__
            )
