"""Answering a search: which model serves the user, its index of the bundle, the ranking.

    latest bundle (cm_bundles)  ─┐
    model pointer (cm_models)   ─┴─▶ tuned model + its stored passage embeddings, when the
                                     pointer is tuned and for the latest bundle;
                                     otherwise the base model, embedding the bundle's passages
                                     itself (once: the index is cached)

The base model is loaded once and never evicted: every user's LoRA adapter is applied to a view
of it that shares its weights (meshkit.domain.adapter.apply_adapter), so a user's model costs
the adapter's bytes. Tuned models (adapters, and full models trained before adapters or with
CONTEXTMESH_TRAIN_KIND=full) and indexes share one ByteLRU (CONTEXTMESH_SEARCH_CACHE_BYTES),
each counted by the bytes it adds. An adapter trained on another base model than this replica
serves is unusable (its layers would not fit, or would mean something else). Model work runs on two
single-thread pools, so a query never waits behind a bundle's embedding pass and torch's own
threads are not oversubscribed by concurrent calls. A tuned model that cannot be read is
logged and the base model answers instead: search degrades, it does not fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from contextmesh.bundle.v1 import bundle_pb2
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.domain.adapter import (
    adapter_base,
    apply_adapter,
    base_model_identity,
    is_adapter_folder,
    own_nbytes,
    prepare_adapters,
)
from meshkit.domain.embedding import encode, load_model, model_nbytes
from meshkit.domain.passages import bundle_facts, passages_of
from meshkit.metrics import SEARCH_DURATION
from searchsvc.artifacts import (
    download_model,
    read_bundle,
    read_embeddings,
    read_model,
    require_bundle_pointer,
)
from searchsvc.cache import ByteLRU
from searchsvc.index import SearchIndex, build_index
from searchsvc.ranking import DEFAULT_TOP_K, Hit, rank

__all__ = ["BASE_MODEL_ID", "SearchResult", "Searcher"]

log = logging.getLogger(__name__)

BASE_MODEL_ID = "base"
T = TypeVar("T")


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    bundle_hash: str
    tuned: bool


class Searcher:
    def __init__(
        self,
        *,
        bundles: KeyValue,
        models: KeyValue,
        blobs: BlobStore,
        base_model: str,
        cache: ByteLRU,
        device: str = "cpu",
    ) -> None:
        self.bundles = bundles
        self.models = models
        self.blobs = blobs
        self.base_model = base_model
        self.cache = cache
        self.device = device
        self._query_pool = ThreadPoolExecutor(1, thread_name_prefix="search-query")
        self._build_pool = ThreadPoolExecutor(1, thread_name_prefix="search-build")
        self._base: asyncio.Future[Any] | None = None
        self._base_identity = base_model_identity(base_model)

    async def warm_up(self) -> None:
        """Load the base model (and import torch, and peft: about 2.5 s) before the first
        query needs them."""
        await self._base_model()
        await self._run(self._build_pool, prepare_adapters)

    def close(self) -> None:
        self._query_pool.shutdown(wait=False, cancel_futures=True)
        self._build_pool.shutdown(wait=False, cancel_futures=True)

    async def search(self, user: str, query: str, top_k: int = 0) -> SearchResult:
        with SEARCH_DURATION.time():
            bundle, pointer = await asyncio.gather(
                require_bundle_pointer(self.bundles, user), read_model(self.models, user)
            )
            model, index = await self._serving(bundle, pointer)
            vector = await self._run(self._query_pool, _encode_one, model, query)
            hits = rank(index, query, vector, top_k=top_k or DEFAULT_TOP_K)
        return SearchResult(hits, bundle.bundle.content_hash, index.tuned)

    async def _serving(
        self, bundle: bundle_pb2.BundlePointer, pointer: bundle_pb2.ModelPointer | None
    ) -> tuple[Any, SearchIndex]:
        digest = bundle.bundle.content_hash
        if (
            pointer is not None
            and pointer.tuned
            and pointer.bundle_hash == digest
            and pointer.model_key
            and pointer.embeddings_key
        ):
            try:
                model = await self._model(pointer.model_key)
                index = await self.cache.get(
                    ("index", digest, pointer.model_key),
                    lambda: self._tuned_index(bundle, pointer),
                )
                return model, index
            except Exception as exc:
                log.error(
                    "tuned model %s unusable, the base model answers: %s", pointer.model_key, exc
                )
        model = await self._model(BASE_MODEL_ID)
        index = await self.cache.get(
            ("index", digest, BASE_MODEL_ID), lambda: self._base_index(bundle, model)
        )
        return model, index

    async def _model(self, model_id: str) -> Any:
        if model_id == BASE_MODEL_ID:
            return await self._base_model()
        return await self.cache.get(("model", model_id), lambda: self._load_model(model_id))

    async def _base_model(self) -> Any:
        """The base model, loaded once (concurrent first callers wait for that one load)."""
        if self._base is None or _failed(self._base):
            self._base = asyncio.ensure_future(
                self._run(self._build_pool, load_model, self.base_model, self.device)
            )
        return await asyncio.shield(self._base)

    async def _load_model(self, model_id: str) -> tuple[Any, int]:
        """A tuned model and the bytes it adds: an adapter's own weights, or a full model."""
        base = await self._base_model()

        async def load(folder: Path) -> tuple[Any, int]:
            if not is_adapter_folder(folder):
                model = await self._run(self._build_pool, load_model, folder, self.device)
                return model, model_nbytes(model)
            trained_on = adapter_base(folder)
            if trained_on != self._base_identity:
                raise ValueError(
                    f"adapter trained on base model {trained_on}, this replica serves "
                    f"{self._base_identity}"
                )
            view = await self._run(self._build_pool, apply_adapter, base, folder)
            return view, own_nbytes(view, base)

        return await download_model(self.blobs, model_id, load)

    async def _base_index(
        self, bundle: bundle_pb2.BundlePointer, model: Any
    ) -> tuple[SearchIndex, int]:
        document = await read_bundle(self.blobs, bundle)
        facts = bundle_facts(document)
        passages = [p for f in facts for p in passages_of(f)]
        vectors = await self._run(self._build_pool, encode, model, [p.text for p in passages])
        log.info(
            "embedded %d passages of bundle %s", len(passages), bundle.bundle.content_hash[:12]
        )
        index = await self._run(
            self._build_pool,
            _index,
            bundle.bundle.content_hash,
            BASE_MODEL_ID,
            False,
            passages,
            vectors,
            {f.repository: f.terms for f in facts},
        )
        return index, index.nbytes

    async def _tuned_index(
        self, bundle: bundle_pb2.BundlePointer, pointer: bundle_pb2.ModelPointer
    ) -> tuple[SearchIndex, int]:
        document = await read_bundle(self.blobs, bundle)
        passages, vectors = await read_embeddings(self.blobs, pointer.embeddings_key)
        terms = {f.repository: f.terms for f in bundle_facts(document)}
        index = await self._run(
            self._build_pool,
            _index,
            bundle.bundle.content_hash,
            pointer.model_key,
            True,
            passages,
            vectors,
            terms,
        )
        return index, index.nbytes

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def _encode_one(model: Any, query: str) -> np.ndarray:
    return encode(model, [query])[0]


def _index(
    bundle_hash: str,
    model_id: str,
    tuned: bool,
    passages: list[Any],
    vectors: np.ndarray,
    terms: dict[str, tuple[str, ...]],
) -> SearchIndex:
    return build_index(
        bundle_hash=bundle_hash,
        model_id=model_id,
        tuned=tuned,
        passages=passages,
        vectors=vectors,
        terms=terms,
    )
