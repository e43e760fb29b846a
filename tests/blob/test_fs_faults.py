"""The filesystem store tells a failed write from an object that exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshkit.blob import FilesystemBlobStore
from meshkit.blob.base import ensure_stored
from meshkit.errors import BlobNotFoundError


async def test_a_file_where_a_folder_must_be_fails_the_write(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    try:
        (tmp_path / "repos" / "alice").mkdir(parents=True)
        (tmp_path / "repos" / "alice" / "blocked").write_text("in the way")
        key = "repos/alice/blocked/abc.json"
        with pytest.raises(NotADirectoryError, match="is a file"):
            await store.create(key, b"{}")
        with pytest.raises(NotADirectoryError):
            await ensure_stored(store, key, b"{}")  # not "stored already"
        with pytest.raises(BlobNotFoundError):
            await store.get(key)
    finally:
        await store.close()
