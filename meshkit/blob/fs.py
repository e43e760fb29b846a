"""The filesystem blob store: the embedded default, and a volume in a single-node deployment.

Writes go to a temporary file under <root>/.incoming, are fsynced, then appear at once:
`put` renames over the key (atomic replace) and `create` hard-links to it, which fails if the
key exists, so exactly one of several concurrent creators wins and nobody sees half a file.

File calls run on the store's own thread pool: a sync worker writes thousands of small
blobs, each with two fsyncs, and on asyncio's default pool (cores + 4 threads) they would
queue one behind another; many in flight at once let the filesystem commit them together.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import pathlib
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar

from meshkit.blob.base import CHUNK_SIZE, BlobInfo, BlobStore, Data, as_chunks, validate_key
from meshkit.errors import BlobExistsError, BlobNotFoundError

__all__ = ["FilesystemBlobStore"]

T = TypeVar("T")

_INCOMING = ".incoming"


class FilesystemBlobStore(BlobStore):
    """Blobs as files under one root directory."""

    def __init__(self, root: str | os.PathLike[str], *, threads: int = 32) -> None:
        self.root = pathlib.Path(root).resolve()
        (self.root / _INCOMING).mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="blob-fs")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        # Waiting for in-flight file calls must not block the event loop.
        await asyncio.to_thread(self._pool.shutdown, wait=True)

    def _path(self, key: str) -> pathlib.Path:
        return self.root / validate_key(key)

    async def _write_temp(self, data: Data) -> tuple[pathlib.Path, int]:
        tmp = self.root / _INCOMING / uuid.uuid4().hex
        fd = await self._run(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        size = 0
        try:
            async for chunk in as_chunks(data):
                await self._run(_write_all, fd, chunk)
                size += len(chunk)
            await self._run(os.fsync, fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp, size

    async def _store(self, key: str, data: Data, *, replace: bool) -> BlobInfo:
        path = self._path(key)
        if isinstance(data, bytes | bytearray | memoryview):
            # Whole bytes: write, fsync and publish in one trip to the pool.
            size = await self._run(_store_bytes, self.root / _INCOMING, path, bytes(data), replace)
            return BlobInfo(key, size)
        tmp, size = await self._write_temp(data)
        try:
            await self._run(_publish, tmp, path, replace)
        finally:
            tmp.unlink(missing_ok=True)
        return BlobInfo(key, size)

    async def put(self, key: str, data: Data) -> BlobInfo:
        return await self._store(key, data, replace=True)

    async def create(self, key: str, data: Data) -> BlobInfo:
        if self._path(key).exists():  # cheap early answer; the link is what decides
            raise BlobExistsError(key)
        try:
            return await self._store(key, data, replace=False)
        except FileExistsError:
            raise BlobExistsError(key) from None

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await self._run(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFoundError(key) from None

    async def open_read(self, key: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await self._run(_open_binary, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFoundError(key) from None
        try:
            while chunk := await self._run(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def exists(self, key: str) -> bool:
        return await self._run(self._path(key).is_file)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        if prefix:
            # A prefix may end mid-segment ("repos/al"), but must not climb out of the root.
            validate_key(prefix.rstrip("/") or "x")
        infos = await self._run(self._scan, prefix)
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
        await self._run(_unlink, self._path(key))


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]


def _open_binary(path: pathlib.Path) -> BinaryIO:
    return open(path, "rb")  # closed by open_read


def _unlink(path: pathlib.Path) -> None:
    path.unlink(missing_ok=True)


def _store_bytes(incoming: pathlib.Path, path: pathlib.Path, data: bytes, replace: bool) -> int:
    tmp = incoming / uuid.uuid4().hex
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path, replace)
    finally:
        tmp.unlink(missing_ok=True)
    return len(data)


def _publish(tmp: pathlib.Path, path: pathlib.Path, replace: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        # A file where a folder must be: a failed write, never "the blob exists already".
        raise NotADirectoryError(f"{path.parent} is a file, not a folder") from None
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
