"""A blob store that measures another: bytes moved and time per operation, by backend.

open_blob_store wraps every store it opens in one, so each service's blob traffic shows in
contextmesh_blob_bytes_total and contextmesh_blob_operation_duration_seconds (meshkit.metrics)
without any backend knowing. Errors pass through unchanged; a failed operation is timed too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from prometheus_client.context_managers import Timer

from meshkit.blob.base import CHUNK_SIZE, BlobInfo, BlobStore, Data
from meshkit.metrics import BLOB_BYTES, BLOB_DURATION

__all__ = ["MeasuredBlobStore"]


class MeasuredBlobStore(BlobStore):
    """Delegates to `inner`, counting under `backend` (file, s3, gcs, azure, ...)."""

    def __init__(self, inner: BlobStore, backend: str) -> None:
        self.inner = inner
        self.backend = backend
        self._read = BLOB_BYTES.labels(backend, "read")
        self._written = BLOB_BYTES.labels(backend, "write")

    def __repr__(self) -> str:
        return f"MeasuredBlobStore({self.inner!r})"

    def _timer(self, operation: str) -> Timer:
        return BLOB_DURATION.labels(self.backend, operation).time()

    async def put(self, key: str, data: Data) -> BlobInfo:
        with self._timer("put"):
            info = await self.inner.put(key, data)
        self._written.inc(info.size)
        return info

    async def create(self, key: str, data: Data) -> BlobInfo:
        with self._timer("create"):
            info = await self.inner.create(key, data)
        self._written.inc(info.size)
        return info

    async def get(self, key: str) -> bytes:
        with self._timer("get"):
            data = await self.inner.get(key)
        self._read.inc(len(data))
        return data

    async def open_read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        with self._timer("open_read"):
            async for chunk in self.inner.open_read(key, chunk_size):
                self._read.inc(len(chunk))
                yield chunk

    async def exists(self, key: str) -> bool:
        with self._timer("exists"):
            return await self.inner.exists(key)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        with self._timer("list"):
            async for info in self.inner.list(prefix):
                yield info

    async def delete(self, key: str) -> None:
        with self._timer("delete"):
            await self.inner.delete(key)

    async def close(self) -> None:
        await self.inner.close()
