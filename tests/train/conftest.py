"""Fixtures of the training tests: the tiny model, a blob store, a user of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshkit.blob import BlobStore, FilesystemBlobStore
from tests.train.support import tiny_model_dir

__all__ = ["blobs", "tiny_model_dir", "user"]


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = FilesystemBlobStore(tmp_path / "blobs")
    yield store
    await store.close()


@pytest.fixture
def user() -> str:
    """A user name no other test uses (the session's nats-server is shared)."""
    return f"u{uuid.uuid4().hex[:12]}"
