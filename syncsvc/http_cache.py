"""The ETag cache shared by every sync worker: ETags in KV, bodies in the blob store.

A body is stored content-addressed under http-cache/<sha256>, and the KV entry (keyed by the
SHA-256 of the URL, so no URL or query string becomes a key) names it with its ETag. A 304
answer then costs GitHub nothing and costs us one KV read and one blob read.
"""

from __future__ import annotations

import hashlib
import json

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.blob.base import ensure_stored
from meshkit.errors import BlobNotFoundError
from syncsvc.sources.base import CachedResponse, ResponseCache

__all__ = ["SharedResponseCache"]


class SharedResponseCache(ResponseCache):
    def __init__(self, kv: KeyValue, blobs: BlobStore) -> None:
        self.kv = kv
        self.blobs = blobs

    @staticmethod
    def _key(url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()

    async def get(self, url: str) -> CachedResponse | None:
        try:
            entry = await self.kv.get(self._key(url))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        meta = json.loads(entry.value)
        try:
            body = await self.blobs.get(meta["body"])
        except BlobNotFoundError:
            return None  # body expired or was cleaned up: fetch in full again
        return CachedResponse(etag=meta["etag"], body=body)

    async def put(self, url: str, response: CachedResponse) -> None:
        digest = hashlib.sha256(response.body).hexdigest()
        body_key = f"http-cache/{digest[:2]}/{digest}"
        await ensure_stored(self.blobs, body_key, response.body)
        await self.kv.put(
            self._key(url), json.dumps({"etag": response.etag, "body": body_key}).encode()
        )
