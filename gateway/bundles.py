"""Reading a user's latest bundle: its pointer in cm_bundles, its index and content blobs."""

from __future__ import annotations

from collections.abc import AsyncIterator

from contextmesh.bundle.v1 import bundle_pb2
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.pointers import read_bundle_pointer
from meshkit.rpc import NotFound

__all__ = ["BundleReader"]


class BundleReader:
    def __init__(self, pointers: KeyValue, blobs: BlobStore) -> None:
        self.pointers = pointers
        self.blobs = blobs

    async def pointer(self, user: str) -> bundle_pb2.BundlePointer:
        pointer = await read_bundle_pointer(self.pointers, user)
        if pointer is None:
            raise NotFound(f"user {user!r} has no bundle yet; call RefreshBundle first")
        return pointer

    async def index(self, pointer: bundle_pb2.BundlePointer) -> bundle_pb2.BundleIndex:
        index = bundle_pb2.BundleIndex()
        index.ParseFromString(await self.blobs.get(pointer.index_key))
        return index

    def content(self, pointer: bundle_pb2.BundlePointer) -> AsyncIterator[bytes]:
        return self.blobs.open_read(pointer.bundle.blob_key, chunk_size=256 * 1024)
