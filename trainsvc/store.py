"""Where a training's results live in the blob store, and how they get there.

    models/<user>/<bundle hash>/<config digest>/manifest.json            written last
    models/<user>/<bundle hash>/<config digest>/<model digest>/model/... the tuned model folder,
                                                                     or its LoRA adapter
    models/<user>/<bundle hash>/<config digest>/<model digest>/embeddings.npy
    models/<user>/<bundle hash>/<config digest>/<model digest>/embeddings.passages.json

The config digest (TrainConfig.digest) covers the hyperparameters, the base model and the pair
builder's version, so the same bundle trained the same way has one address. The model digest
is the hash of the saved files themselves: two runs that produced different bytes (another
GPU, another thread count) can never mix their files under one key. Every blob is written
create-only; the manifest, written last and create-only too, is the marker that a bundle
was trained with this config: the first run to write it wins, and a later run adopts it.
A model that did not beat the base model still gets a manifest (metrics only, no files), so a
refresh that yields the same bundle skips training either way. The manifest's `kind` says what
the model folder holds ('adapter' names its base model too); a manifest written before
adapters existed has none and is a full model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshkit.blob import BlobStore
from meshkit.domain.bundle import canonical_json
from meshkit.domain.embedding import embeddings_to_npy, passages_key
from meshkit.domain.passages import passages_to_json
from meshkit.errors import BlobExistsError, BlobNotFoundError
from trainsvc.evaluate import Metrics
from trainsvc.pipeline import TrainResult

__all__ = ["MANIFEST_FORMAT", "Manifest", "ModelLayout", "read_manifest", "store_result"]

MANIFEST_FORMAT = "contextmesh.model/v1"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ModelLayout:
    """The blob keys of one (user, bundle, config) training."""

    user: str
    bundle_hash: str
    config_digest: str

    @property
    def prefix(self) -> str:
        return f"models/{self.user}/{self.bundle_hash}/{self.config_digest}"

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}/manifest.json"

    def model_key(self, model_digest: str) -> str:
        return f"{self.prefix}/{model_digest}/model"

    def embeddings_key(self, model_digest: str) -> str:
        return f"{self.prefix}/{model_digest}/embeddings.npy"


@dataclass(frozen=True)
class Manifest:
    """What a training produced: metrics always, model and embeddings when it improved."""

    bundle_hash: str
    config_digest: str
    improved: bool
    base: Metrics
    tuned: Metrics
    model_key: str
    """'' when the base model serves."""
    embeddings_key: str
    files: dict[str, str]
    """Model file path (relative to model_key) -> sha256."""
    steps: int
    pairs: int
    device: str
    seconds: float
    kind: str = "full"
    """'full': model_key holds a whole model; 'adapter': a LoRA adapter on base_model."""
    base_model: str = ""
    """Identity of the base model trained on (meshkit.domain.adapter.base_model_identity)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "bundle_hash": self.bundle_hash,
            "config_digest": self.config_digest,
            "improved": self.improved,
            "base": self.base.as_dict(),
            "tuned": self.tuned.as_dict(),
            "model_key": self.model_key,
            "embeddings_key": self.embeddings_key,
            "files": self.files,
            "steps": self.steps,
            "pairs": self.pairs,
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "kind": self.kind,
            "base_model": self.base_model,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a {MANIFEST_FORMAT} manifest")

        def metrics(d: dict[str, Any]) -> Metrics:
            return Metrics(
                float(d["mrr_at_10"]),
                float(d["recall_at_1"]),
                float(d["recall_at_5"]),
                int(d["queries"]),
                float(d.get("paraphrase_mrr_at_10", 0.0)),  # absent before PAIRS_VERSION 2
                int(d.get("paraphrase_queries", 0)),
            )

        return cls(
            bundle_hash=str(doc["bundle_hash"]),
            config_digest=str(doc["config_digest"]),
            improved=bool(doc["improved"]),
            base=metrics(doc["base"]),
            tuned=metrics(doc["tuned"]),
            model_key=str(doc.get("model_key") or ""),
            embeddings_key=str(doc.get("embeddings_key") or ""),
            files={str(k): str(v) for k, v in (doc.get("files") or {}).items()},
            steps=int(doc.get("steps") or 0),
            pairs=int(doc.get("pairs") or 0),
            device=str(doc.get("device") or ""),
            seconds=float(doc.get("seconds") or 0.0),
            kind=str(doc.get("kind") or "full"),  # absent before adapters: a full model
            base_model=str(doc.get("base_model") or ""),
        )


async def read_manifest(blobs: BlobStore, layout: ModelLayout) -> Manifest | None:
    """The stored manifest, or None when this bundle was never trained with this config."""
    try:
        data = await blobs.get(layout.manifest_key)
    except BlobNotFoundError:
        return None
    return Manifest.from_json(json.loads(data))


async def store_result(blobs: BlobStore, layout: ModelLayout, result: TrainResult) -> Manifest:
    """Upload a training's results and write its manifest; return the manifest that holds
    (another run's, when one finished first)."""
    model_key = embeddings_key = ""
    files: dict[str, str] = {}
    if result.improved and result.model_dir is not None and result.embeddings is not None:
        files = await asyncio.to_thread(_file_digests, result.model_dir)
        model_digest = _model_digest(files)
        model_key = layout.model_key(model_digest)
        embeddings_key = layout.embeddings_key(model_digest)
        for relative in sorted(files):
            await _create(
                blobs, f"{model_key}/{relative}", _read_chunks(result.model_dir / relative)
            )
        await _create(blobs, embeddings_key, embeddings_to_npy(result.embeddings))
        await _create(
            blobs, passages_key(embeddings_key), canonical_json(passages_to_json(result.passages))
        )
    manifest = Manifest(
        bundle_hash=layout.bundle_hash,
        config_digest=layout.config_digest,
        improved=result.improved,
        base=result.base,
        tuned=result.tuned,
        model_key=model_key,
        embeddings_key=embeddings_key,
        files=files,
        steps=result.steps,
        pairs=result.pairs,
        device=result.device,
        seconds=result.seconds,
        kind=result.kind,
        base_model=result.base_model,
    )
    try:
        await blobs.create(layout.manifest_key, canonical_json(manifest.to_json()))
    except BlobExistsError:
        existing = await read_manifest(blobs, layout)
        if existing is not None:
            return existing
    return manifest


async def _create(blobs: BlobStore, key: str, data: bytes | AsyncIterator[bytes]) -> None:
    # BlobExistsError: the key derives from the content, so the same bytes are there already.
    with contextlib.suppress(BlobExistsError):
        await blobs.create(key, data)


def _file_digests(folder: Path) -> dict[str, str]:
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
            digests[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return digests


def _model_digest(files: dict[str, str]) -> str:
    listing = "".join(f"{path}\0{digest}\n" for path, digest in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()[:32]


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, _CHUNK):
            yield chunk
