"""Reading a user's latest bundle: its pointer in cm_bundles, its index and content blobs.

A pointer whose blob or index key lies outside bundles/<user>/ is refused with
FAILED_PRECONDITION, never served: only mergesvc writes pointers and it always derives the keys
from the user, so such a pointer was tampered with (or written by a bug) and following it would
hand this user another user's bundle. Not NOT_FOUND: the user's entry exists and hiding that
would send operators looking for a missing merge; the next refresh replaces the pointer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from contextmesh.bundle.v1 import bundle_pb2
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.domain.pointers import bundle_pointer_problem, read_message
from meshkit.rpc import FailedPrecondition, NotFound

__all__ = ["BundleReader"]

log = logging.getLogger(__name__)


class BundleReader:
    def __init__(self, pointers: KeyValue, blobs: BlobStore) -> None:
        self.pointers = pointers
        self.blobs = blobs

    async def pointer(self, user: str) -> bundle_pb2.BundlePointer:
        pointer, _ = await read_message(self.pointers, user, bundle_pb2.BundlePointer)
        if pointer is None or not pointer.bundle.content_hash:
            raise NotFound(f"user {user!r} has no bundle yet; call RefreshBundle first")
        problem = bundle_pointer_problem(pointer, user)
        if problem is not None:
            log.error("refused the bundle pointer of %r: it names %s", user, problem)
            raise FailedPrecondition(
                f"the bundle pointer of user {user!r} does not name a bundle of that user and "
                "is not served; call RefreshBundle to replace it"
            )
        return pointer

    async def index(self, pointer: bundle_pb2.BundlePointer) -> bundle_pb2.BundleIndex:
        index = bundle_pb2.BundleIndex()
        index.ParseFromString(await self.blobs.get(pointer.index_key))
        return index

    def content(self, pointer: bundle_pb2.BundlePointer) -> AsyncIterator[bytes]:
        return self.blobs.open_read(pointer.bundle.blob_key, chunk_size=256 * 1024)
