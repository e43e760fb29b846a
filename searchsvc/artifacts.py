"""Reading what search needs from KV and the blob store: pointers, bundles, tuned models.

The layout is trainsvc's (docs/training.md); searchsvc only reads it, through the keys the
model pointer names, so neither service imports the other.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from contextmesh.bundle.v1 import bundle_pb2
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.domain.adapter import ADAPTER_MANIFEST
from meshkit.domain.documents import Bundle
from meshkit.domain.embedding import embeddings_from_npy, passages_key
from meshkit.domain.passages import Passage, passages_from_json
from meshkit.domain.pointers import read_bundle_pointer, read_model_pointer
from meshkit.rpc import NotFound

__all__ = [
    "download_model",
    "read_bundle",
    "read_embeddings",
    "read_model",
    "require_bundle_pointer",
]

T = TypeVar("T")


async def require_bundle_pointer(bundles: KeyValue, user: str) -> bundle_pb2.BundlePointer:
    """The user's latest bundle; NotFound (a clear NOT_FOUND for the caller) when none."""
    pointer = await read_bundle_pointer(bundles, user)
    if pointer is None:
        raise NotFound(
            f"user {user!r} has no bundle yet: refresh it first (RefreshBundle), then search"
        )
    return pointer


async def read_model(models: KeyValue, user: str) -> bundle_pb2.ModelPointer | None:
    """The user's model pointer, None before their first training."""
    return (await read_model_pointer(models, user))[0]


async def read_bundle(blobs: BlobStore, pointer: bundle_pb2.BundlePointer) -> Bundle:
    """The bundle the pointer names; ValueError when the blob holds no bundle document."""
    document = json.loads(await blobs.get(pointer.bundle.blob_key))
    try:
        return Bundle.from_json(document)
    except ValueError:
        raise ValueError(f"{pointer.bundle.blob_key} is not a bundle document") from None


async def read_embeddings(
    blobs: BlobStore, embeddings_key: str
) -> tuple[list[Passage], np.ndarray]:
    """A tuned model's stored passage embeddings and the passages they embed."""
    vectors = embeddings_from_npy(await blobs.get(embeddings_key))
    passages = passages_from_json(json.loads(await blobs.get(passages_key(embeddings_key))))
    if len(passages) != vectors.shape[0]:
        raise ValueError(
            f"{embeddings_key}: {vectors.shape[0]} embeddings for {len(passages)} passages"
        )
    return passages, vectors


async def download_model(
    blobs: BlobStore, model_key: str, load: Callable[[Path], Awaitable[T]]
) -> T:
    """Fetch the model folder under model_key (a whole model, or a LoRA adapter) into a
    temporary folder and load it from there; the folder is gone afterwards (the loaded model
    lives in memory)."""
    prefix = model_key.rstrip("/") + "/"
    with tempfile.TemporaryDirectory(prefix="contextmesh-search-model-") as scratch:
        root = Path(scratch)
        found = 0
        async for info in blobs.list(prefix):
            target = root / info.key[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                async for chunk in blobs.open_read(info.key):
                    await asyncio.to_thread(out.write, chunk)
            found += 1
        modules = root / "modules.json"
        if not found or not (modules.is_file() or (root / ADAPTER_MANIFEST).is_file()):
            raise FileNotFoundError(f"no model files under {prefix}")
        if modules.is_file():
            # A module folder with no files (none today) would not have been listed.
            for module in json.loads(modules.read_text()):
                (root / str(module.get("path", ""))).mkdir(parents=True, exist_ok=True)
        return await load(root)
