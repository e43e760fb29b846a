"""The ETag cache shared by every sync worker: ETags in KV, bodies in the blob store.

Entries are filed under the owner the URL is about (meshkit.domain.user_data), so forgetting
a user removes theirs with one purge and one prefix: a KV entry keyed `<owner>.<sha256 of
the URL>` (no URL or query string becomes a key) names the body, stored content-addressed
under `http-cache/<owner>/`, with its ETag. A 304 answer then costs GitHub nothing and costs
us one KV read and one blob read. A body is kept by the retention sweep while an entry names
it; an entry written while a sweep runs keeps its body through the fence
(meshkit.domain.retention_fence), since the body may be an old object the sweep condemned.
"""

from __future__ import annotations

import json

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.blob.base import ensure_stored
from meshkit.domain.retention_fence import RetentionFence
from meshkit.domain.user_data import http_cache_body_key, http_cache_key
from meshkit.errors import BlobNotFoundError
from meshkit.topology import Buckets
from syncsvc.sources.base import CachedResponse, ResponseCache

__all__ = ["SharedResponseCache"]


class SharedResponseCache(ResponseCache):
    def __init__(self, kv: KeyValue, blobs: BlobStore, fence: RetentionFence) -> None:
        self.kv = kv
        self.blobs = blobs
        self.fence = fence

    @classmethod
    async def open(cls, js: JetStreamContext, blobs: BlobStore) -> SharedResponseCache:
        """The cache on the cm_http_cache bucket, fenced against retention sweeps."""
        return cls(await js.key_value(Buckets.HTTP_CACHE.name), blobs, RetentionFence(js))

    async def get(self, url: str) -> CachedResponse | None:
        try:
            entry = await self.kv.get(http_cache_key(url))
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
        body_key = http_cache_body_key(url, response.body)
        await ensure_stored(self.blobs, body_key, response.body)
        await self.kv.put(
            http_cache_key(url), json.dumps({"etag": response.etag, "body": body_key}).encode()
        )
        await self.fence.keep([body_key], lambda key: ensure_stored(self.blobs, key, response.body))
