"""The blob store interface every backend implements, with one semantics everywhere.

- Keys are relative, '/'-separated paths of safe characters (see validate_key); a key that
  could escape its prefix is refused before it reaches a backend.
- `put` replaces; `create` is create-only and raises BlobExistsError when the key is taken.
  Both are atomic: a reader sees the old object, the new one, or nothing, never a part.
- `get` and `open_read` raise BlobNotFoundError for a missing key.
- `list` yields keys under a prefix in lexicographic order, paging internally.
- `delete` of a missing key is not an error.
Content-addressed keys make `create` the normal write: the same bytes under the same key.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from meshkit.errors import InvalidBlobKeyError

__all__ = [
    "CHUNK_SIZE",
    "BlobInfo",
    "BlobStore",
    "Data",
    "as_chunks",
    "delete_prefix",
    "ensure_stored",
    "validate_key",
]

CHUNK_SIZE = 1024 * 1024
MAX_KEY_LENGTH = 1024
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9._=+-]+$")

Data = bytes | AsyncIterable[bytes]


@dataclass(frozen=True)
class BlobInfo:
    """What a store knows of a stored object."""

    key: str
    size: int


def validate_key(key: str) -> str:
    """Return key if it is a safe, portable blob key; raise InvalidBlobKeyError otherwise."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidBlobKeyError(f"blob key must be 1 to {MAX_KEY_LENGTH} characters")
    segments = key.split("/")
    if not segments[0][:1].isalnum():
        # Keeps every key clear of backends' private folders (the fs store's .incoming).
        raise InvalidBlobKeyError(f"blob key {key!r} must start with a letter or digit")
    for segment in segments:
        if segment in (".", "..") or not _KEY_SEGMENT.match(segment):
            raise InvalidBlobKeyError(
                f"blob key {key!r} has a bad segment {segment!r}: segments hold only letters, "
                "digits and . _ = + -, and are neither '.' nor '..'"
            )
    return key


class BlobStore(abc.ABC):
    """An object store holding immutable blobs. Use as an async context manager or close()."""

    @abc.abstractmethod
    async def put(self, key: str, data: Data) -> BlobInfo:
        """Store data under key, replacing any object there, atomically."""

    @abc.abstractmethod
    async def create(self, key: str, data: Data) -> BlobInfo:
        """Store data under key only if the key is free; else raise BlobExistsError."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes:
        """Return the whole object; raise BlobNotFoundError if there is none."""

    @abc.abstractmethod
    def open_read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Yield the object in chunks without holding it whole; BlobNotFoundError if missing."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether an object is stored under key."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Yield objects whose key starts with prefix, in key order."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object under key; a missing key is not an error."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections. The store is unusable afterwards."""

    async def __aenter__(self) -> BlobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def as_chunks(data: Data) -> AsyncIterator[bytes]:
    """Iterate data as chunks whether it came whole or streamed."""
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    async for chunk in data:
        yield chunk


async def ensure_stored(store: BlobStore, key: str, data: Data) -> bool:
    """Create a content-addressed object; True if this call wrote it, False if it was there.

    For keys derived from the content, an existing object holds the same bytes, so "already
    exists" is success: this is how every immutable blob of the pipeline is written.
    """
    from meshkit.errors import BlobExistsError

    try:
        await store.create(key, data)
    except BlobExistsError:
        return False
    return True


async def delete_prefix(store: BlobStore, prefix: str) -> int:
    """Delete every object whose key starts with prefix; returns how many there were."""
    keys = [info.key async for info in store.list(prefix)]
    for start in range(0, len(keys), 32):
        await asyncio.gather(*(store.delete(k) for k in keys[start : start + 32]))
    return len(keys)
