"""The filesystem blob store: the embedded default, and a volume in a single-node deployment.

Writes go to a temporary file under <root>/.incoming, are fsynced, then appear at once:
`put` renames over the key (atomic replace) and `create` hard-links to it, which fails if the
key exists, so exactly one of several concurrent creators wins and nobody sees half a file.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import pathlib
import uuid
from collections.abc import AsyncIterator

from meshkit.blob.base import CHUNK_SIZE, BlobInfo, BlobStore, Data, as_chunks, validate_key
from meshkit.errors import BlobExistsError, BlobNotFoundError

__all__ = ["FilesystemBlobStore"]

_INCOMING = ".incoming"


class FilesystemBlobStore(BlobStore):
    """Blobs as files under one root directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = pathlib.Path(root).resolve()
        (self.root / _INCOMING).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> pathlib.Path:
        return self.root / validate_key(key)

    async def _write_temp(self, data: Data) -> tuple[pathlib.Path, int]:
        tmp = self.root / _INCOMING / uuid.uuid4().hex
        fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        size = 0
        try:
            async for chunk in as_chunks(data):
                await asyncio.to_thread(_write_all, fd, chunk)
                size += len(chunk)
            await asyncio.to_thread(os.fsync, fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp, size

    async def put(self, key: str, data: Data) -> BlobInfo:
        path = self._path(key)
        tmp, size = await self._write_temp(data)
        try:
            await asyncio.to_thread(_publish, tmp, path, replace=True)
        finally:
            tmp.unlink(missing_ok=True)
        return BlobInfo(key, size)

    async def create(self, key: str, data: Data) -> BlobInfo:
        path = self._path(key)
        if path.exists():  # cheap early answer; the link below is what decides
            raise BlobExistsError(key)
        tmp, size = await self._write_temp(data)
        try:
            await asyncio.to_thread(_publish, tmp, path, replace=False)
        except FileExistsError:
            raise BlobExistsError(key) from None
        finally:
            tmp.unlink(missing_ok=True)
        return BlobInfo(key, size)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFoundError(key) from None

    async def open_read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFoundError(key) from None
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        if prefix:
            # A prefix may end mid-segment ("repos/al"), but must not climb out of the root.
            validate_key(prefix.rstrip("/") or "x")
        infos = await asyncio.to_thread(self._scan, prefix)
        for info in infos:
            yield info

    def _scan(self, prefix: str) -> builtins.list[BlobInfo]:
        # Walk only the deepest folder the prefix names, then filter by the rest.
        folder = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d != _INCOMING]
            for name in filenames:
                full = pathlib.Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        found.append(BlobInfo(key, full.stat().st_size))
        found.sort(key=lambda info: info.key)
        return found

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]


def _publish(tmp: pathlib.Path, path: pathlib.Path, *, replace: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if replace:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise FileExistsError(path) from None
            raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: pathlib.Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
