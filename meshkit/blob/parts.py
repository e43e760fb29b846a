"""Cut a byte stream into parts of a fixed size, holding at most one part at a time.

Multipart (S3), block (Azure) and resumable (GCS) uploads all send a stream as parts; the
reader below also tells, cheaply, whether a stream fits in one part, so that small objects go
up in one request and only large ones pay for the multi-request protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from meshkit.blob.base import Data, as_chunks

__all__ = ["PartReader"]


class PartReader:
    """Read `data` as parts of exactly `part_size` bytes, the last one possibly shorter.

    Memory: the pieces of the part being gathered, the joined part, and at most one source
    chunk read ahead; never more than about two parts.
    """

    def __init__(self, data: Data, part_size: int) -> None:
        if part_size <= 0:
            raise ValueError("part_size must be positive")
        self._size = part_size
        self._pieces: list[memoryview] = []
        self._held = 0
        self._chunks: AsyncIterator[bytes] | None = None
        if isinstance(data, bytes | bytearray | memoryview):
            # Slices of the caller's buffer: copying a large buffer first would double it.
            view = memoryview(data).cast("B")
            if view:
                self._pieces, self._held = [view], len(view)
        else:
            self._chunks = aiter(as_chunks(data))
        self.total = 0  # bytes handed out so far

    async def read(self) -> bytes:
        """The next part, b"" once the stream is spent."""
        while self._held < self._size and await self._pull():
            pass
        part: list[memoryview] = []
        wanted = self._size
        while self._pieces and wanted:
            piece = self._pieces[0]
            if len(piece) <= wanted:
                part.append(self._pieces.pop(0))
            else:
                part.append(piece[:wanted])
                self._pieces[0] = piece[wanted:]
            wanted -= len(part[-1])
        data = b"".join(part)
        self._held -= len(data)
        self.total += len(data)
        return data

    async def at_end(self) -> bool:
        """Whether nothing is left, reading ahead at most one chunk of the source."""
        return not self._pieces and not await self._pull()

    async def _pull(self) -> bool:
        if self._chunks is None:
            return False
        while True:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                self._chunks = None
                return False
            if chunk:
                self._pieces.append(memoryview(chunk).cast("B"))
                self._held += len(chunk)
                return True
