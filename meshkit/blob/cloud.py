"""What the cloud backends share: writes with an early create-only check, and paged listing.

Each backend supplies `_write` (one path for put and create, the provider's "only if absent"
precondition on the write when creating) and `_list_page` (one retried page of object names
under a full name prefix, and the token of the next page, None after the last).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

from meshkit.blob.base import BlobInfo, BlobStore, Data
from meshkit.blob.keys import KeySpace
from meshkit.errors import BlobExistsError

__all__ = ["CloudBlobStore", "Names", "Page"]

Names = list[tuple[str, int]]
"""(object name, size) pairs."""
Page = tuple[Names, str | None]
"""One listing page and the token of the next, None after the last."""


class CloudBlobStore(BlobStore):
    _keys: KeySpace

    async def put(self, key: str, data: Data) -> BlobInfo:
        return await self._write(key, data, create=False)

    async def create(self, key: str, data: Data) -> BlobInfo:
        # A cheap early answer that spares an upload; the precondition on the write decides.
        if await self.exists(key):
            raise BlobExistsError(key)
        return await self._write(key, data, create=True)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        wanted = self._keys.list_prefix(prefix)
        token: str | None = None
        while True:
            names, token = await self._list_page(prefix, wanted, token)
            for name, size in names:
                key = self._keys.key(name)
                if key is not None:
                    yield BlobInfo(key, size)
            if not token:
                return

    @abc.abstractmethod
    async def _write(self, key: str, data: Data, *, create: bool) -> BlobInfo:
        """Upload data under key; when create, only if no object is there (else
        BlobExistsError)."""

    @abc.abstractmethod
    async def _list_page(self, prefix: str, wanted: str, token: str | None) -> Page:
        """The page after token of names starting with wanted (prefix is the caller's, for
        error messages), with retries."""
