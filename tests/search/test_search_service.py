"""SearchService over gRPC with the tiny model: errors, lexical rescue, passages, top_k, the
switch between base and tuned models, and the cache bound."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.search.v1 import search_service_pb2 as pb
from contextmesh.search.v1 import search_service_pb2_grpc

from meshkit.bearer import aio_bearer_channel
from meshkit.blob import BlobStore
from meshkit.domain.adapter import LoraSpec, add_lora, base_model_identity, save_adapter
from meshkit.domain.embedding import encode, load_model, model_nbytes
from meshkit.domain.ids import new_job_id
from meshkit.domain.passages import bundle_passages
from meshkit.rpc import create_server
from meshkit.signing import LocalSigner
from meshkit.topology import Buckets
from searchsvc.cache import ByteLRU
from searchsvc.engine import Searcher
from searchsvc.servicer import SEARCH_RULES, SEARCH_SERVICE, SearchServicer
from tests.support.auth import authenticator_for
from tests.train.support import bundle, sample_bundle, sample_repositories, store_bundle
from trainsvc.evaluate import Metrics
from trainsvc.pipeline import TrainResult
from trainsvc.pointers import move_model_pointer
from trainsvc.store import ModelLayout, store_result


@dataclass
class Service:
    stub: search_service_pb2_grpc.SearchServiceStub
    searcher: Searcher


async def start(
    js: Any, blobs: BlobStore, model: Path, cache_bytes: int, signer: LocalSigner
) -> Any:
    searcher = Searcher(
        bundles=await js.key_value(Buckets.BUNDLES.name),
        models=await js.key_value(Buckets.MODELS.name),
        blobs=blobs,
        base_model=str(model),
        cache=ByteLRU(cache_bytes),
    )
    server = create_server(
        "127.0.0.1:0",
        [
            (
                search_service_pb2_grpc.add_SearchServiceServicer_to_server,
                SearchServicer(searcher),
                SEARCH_SERVICE,
            )
        ],
        auth=authenticator_for(signer),
        rules=SEARCH_RULES,
    )
    await server.server.start()
    return searcher, server


@pytest.fixture
async def service(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, signer: LocalSigner, admin_token: str
) -> AsyncIterator[Service]:
    searcher, server = await start(js, blobs, tiny_model_dir, 256 * 1024 * 1024, signer)
    async with aio_bearer_channel(f"127.0.0.1:{server.port}", admin_token) as channel:
        yield Service(search_service_pb2_grpc.SearchServiceStub(channel), searcher)
    await server.server.stop(None)
    searcher.close()


async def search(service: Service, user: str, query: str, top_k: int = 0) -> pb.SearchResponse:
    return await service.stub.Search(pb.SearchRequest(user=user, query=query, top_k=top_k))


async def test_a_user_without_a_bundle_gets_not_found(service: Service, user: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search(service, user, "anything")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "has no bundle yet" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await search(service, user, "anything", top_k=500)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Zig", "zig-tracer"),
        ("MQTT", "air-station"),
        ("which project uses sqlfluff", "huddle-chat"),  # a library named once, in a README
        ("Elixir experience", "huddle-chat"),
        ("FastAPI", "shelf-api"),
    ],
)
async def test_names_the_model_cannot_know_rank_their_repository_first(
    js: Any, blobs: BlobStore, service: Service, user: str, query: str, expected: str
) -> None:
    ref = await store_bundle(js, blobs, sample_bundle(user), new_job_id())
    answer = await search(service, user, query)
    assert answer.hits[0].repository == f"{user}/{expected}"
    assert answer.bundle_hash == ref.content_hash and not answer.tuned


async def test_a_hit_shows_its_best_passage_not_the_whole_repository(
    js: Any, blobs: BlobStore, service: Service, user: str
) -> None:
    await store_bundle(js, blobs, sample_bundle(user), new_job_id())
    answer = await search(service, user, "how many months on one battery cell")
    hit = answer.hits[0]
    assert hit.repository == f"{user}/air-station"
    assert hit.passage_source == "README: Power budget"
    assert hit.passage.startswith("Awake two seconds") and "Over-the-air" not in hit.passage


async def test_top_k_bounds_the_hits_and_zero_means_ten(
    js: Any, blobs: BlobStore, service: Service, user: str
) -> None:
    await store_bundle(js, blobs, sample_bundle(user), new_job_id())
    everything = await search(service, user, "a project")
    assert len(everything.hits) == 6  # all six: fewer than the default ten
    scores = [h.score for h in everything.hits]
    assert scores == sorted(scores, reverse=True)
    assert len({h.repository for h in everything.hits}) == 6
    assert len((await search(service, user, "a project", top_k=2)).hits) == 2


async def _publish_tuned(
    js: Any, blobs: BlobStore, model_dir: Path, tmp: Path, user: str, bundle_hash: str
) -> bundle_pb2.ModelPointer:
    """Store the tiny model as if trainsvc had tuned it in full (a whole model copy, as every
    model was before adapters), and point the user at it."""
    copy = tmp / "tuned"
    shutil.copytree(model_dir, copy)
    return await _publish(js, blobs, copy, load_model(copy), user, bundle_hash, "full")


def _make_adapter(base_dir: Path, folder: Path, trained_on: str | None = None) -> Any:
    """A LoRA adapter on the tiny model with random (seeded) updates, saved to folder as
    trainsvc saves one; returns the model it makes (base plus adapter)."""
    import torch

    model = load_model(base_dir)
    add_lora(model, LoraSpec(rank=4, alpha=8), seed=3)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # B starts at zero: without this the adapter changes nothing
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    identity = trained_on or base_model_identity(base_dir)
    save_adapter(model, folder, LoraSpec(rank=4, alpha=8), identity)
    return model


async def _publish(
    js: Any, blobs: BlobStore, folder: Path, model: Any, user: str, bundle_hash: str, kind: str
) -> bundle_pb2.ModelPointer:
    document = sample_bundle(user)
    passages = tuple(bundle_passages(document))
    vectors = encode(model, [p.text for p in passages])
    result = TrainResult(
        True,
        Metrics(0.1, 0, 0, 1),
        Metrics(0.2, 0, 0, 1),
        1,
        1,
        passages,
        folder,
        vectors,
        0.1,
        "cpu",
        kind=kind,
    )
    manifest = await store_result(blobs, ModelLayout(user, bundle_hash, "c" * 32), result)
    pointer = bundle_pb2.ModelPointer(
        model_key=manifest.model_key,
        bundle_hash=bundle_hash,
        embeddings_key=manifest.embeddings_key,
        tuned=True,
    )
    models = await js.key_value(Buckets.MODELS.name)
    bundles = await js.key_value(Buckets.BUNDLES.name)
    assert await move_model_pointer(models, bundles, user, pointer)
    return pointer


async def _cached_model(searcher: Searcher, model_key: str) -> Any:
    async def absent() -> tuple[Any, int]:
        raise AssertionError(f"{model_key} is not cached")

    return await searcher.cache.get(("model", model_key), absent)


async def test_an_adapter_serves_on_the_shared_base_beside_a_full_model(
    js: Any, blobs: BlobStore, service: Service, tiny_model_dir: Path, tmp_path: Path, user: str
) -> None:
    """One user has an adapter, another a full model trained before adapters existed: both
    serve from one searcher; the adapter costs its own bytes and shares the base's weights."""
    adapter_user, full_user = f"{user}a", f"{user}f"
    adapter_ref = await store_bundle(js, blobs, sample_bundle(adapter_user), new_job_id())
    full_ref = await store_bundle(js, blobs, sample_bundle(full_user), new_job_id())
    trained = _make_adapter(tiny_model_dir, tmp_path / "adapter")
    adapter = await _publish(
        js, blobs, tmp_path / "adapter", trained, adapter_user, adapter_ref.content_hash, "adapter"
    )
    full = await _publish_tuned(
        js, blobs, tiny_model_dir, tmp_path, full_user, full_ref.content_hash
    )

    answer = await search(service, adapter_user, "Zig")
    assert answer.tuned and answer.hits[0].repository == f"{adapter_user}/zig-tracer"
    assert (await search(service, full_user, "Zig")).tuned

    searcher = service.searcher
    base = await searcher._base_model()
    served = await _cached_model(searcher, adapter.model_key)
    query = "a sensor that reports air quality"
    np.testing.assert_allclose(encode(served, [query]), encode(trained, [query]), atol=1e-5)
    assert not np.allclose(encode(served, [query]), encode(base, [query]), atol=1e-3)
    shared = {t.data_ptr() for t in base.parameters()}
    assert sum(t.data_ptr() in shared for t in served.parameters()) == len(shared)
    sizes = {key: size for key, (_, size) in searcher.cache._entries.items()}
    assert 0 < sizes[("model", adapter.model_key)] < model_nbytes(base) / 4
    assert sizes[("model", full.model_key)] == model_nbytes(base)


async def test_an_adapter_for_another_base_model_is_not_served(
    js: Any, blobs: BlobStore, service: Service, tiny_model_dir: Path, tmp_path: Path, user: str
) -> None:
    ref = await store_bundle(js, blobs, sample_bundle(user), new_job_id())
    trained = _make_adapter(tiny_model_dir, tmp_path / "adapter", trained_on="0" * 32)
    await _publish(js, blobs, tmp_path / "adapter", trained, user, ref.content_hash, "adapter")
    answer = await search(service, user, "Zig")
    assert not answer.tuned, "the base model answers instead"
    assert answer.hits[0].repository == f"{user}/zig-tracer"


async def test_the_tuned_model_serves_only_the_bundle_it_was_tuned_on(
    js: Any, blobs: BlobStore, service: Service, tiny_model_dir: Path, tmp_path: Path, user: str
) -> None:
    ref = await store_bundle(js, blobs, sample_bundle(user), new_job_id())
    assert not (await search(service, user, "Zig")).tuned
    pointer = await _publish_tuned(js, blobs, tiny_model_dir, tmp_path, user, ref.content_hash)
    tuned = await search(service, user, "Zig")
    assert tuned.tuned and tuned.hits[0].repository == f"{user}/zig-tracer"
    assert ("model", pointer.model_key) in service.searcher.cache

    # A newer bundle arrives: its model is not trained yet, so the base model answers it.
    newer = bundle(user, sample_repositories(user)[:4])
    newer_ref = await store_bundle(js, blobs, newer, new_job_id())
    stale = await search(service, user, "Zig")
    assert not stale.tuned and stale.bundle_hash == newer_ref.content_hash
    assert len((await search(service, user, "Zig")).hits) == 4


async def test_the_cache_evicts_to_stay_under_its_byte_bound(
    js: Any, blobs: BlobStore, tiny_model_dir: Path, user: str, signer: LocalSigner
) -> None:
    bound = 64 * 1024  # one index (the base model is held outside the cache)
    searcher, server = await start(js, blobs, tiny_model_dir, bound, signer)
    try:
        users = [f"{user}{i}" for i in range(3)]
        for name in users:
            await store_bundle(js, blobs, sample_bundle(name), new_job_id())
            answer = await searcher.search(name, "Zig", 1)
            assert answer.hits[0].repository == f"{name}/zig-tracer"
            assert searcher.cache.total_bytes <= bound
        assert searcher.cache.stats.evictions >= 2
        assert len(searcher.cache) <= 2
    finally:
        await server.server.stop(None)
        searcher.close()
