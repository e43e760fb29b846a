"""The model pointer's compare-and-set, on a real nats-server: it only ever names a model of
the user's latest bundle, publishing the same model twice writes once, and publishers racing
for the pointer all finish.

Written for tools/mutation.py's model-pointer target (docs/testing.md): fast, in-process.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2
from nats.js.kv import KeyValue

from meshkit.domain.pointers import read_model_pointer
from meshkit.topology import Buckets
from trainsvc.pointers import latest_bundle_hash, move_model_pointer

OLD, NEW = "aa" * 32, "bb" * 32


async def _buckets(js: Any) -> tuple[KeyValue, KeyValue, str]:
    user = f"u{uuid.uuid4().hex[:12]}"
    return (
        await js.key_value(Buckets.MODELS.name),
        await js.key_value(Buckets.BUNDLES.name),
        user,
    )


async def _latest_bundle(bundles: KeyValue, user: str, digest: str) -> None:
    pointer = bundle_pb2.BundlePointer(
        bundle=job_pb2.BundleRef(content_hash=digest, blob_key=f"bundles/{user}/{digest}.json")
    )
    await bundles.put(user, pointer.SerializeToString())


def _model(user: str, digest: str, name: str = "m") -> bundle_pb2.ModelPointer:
    return bundle_pb2.ModelPointer(
        bundle_hash=digest, model_key=f"models/{user}/{digest}/{name}", tuned=True
    )


async def test_the_first_model_of_the_latest_bundle_is_pointed_at(js: Any) -> None:
    models, bundles, user = await _buckets(js)
    await _latest_bundle(bundles, user, NEW)

    assert await latest_bundle_hash(bundles, user) == NEW
    assert await move_model_pointer(models, bundles, user, _model(user, NEW))
    pointer, revision = await read_model_pointer(models, user)
    assert pointer == _model(user, NEW) and revision is not None


async def test_a_model_of_an_older_bundle_never_replaces_the_pointer(js: Any) -> None:
    models, bundles, user = await _buckets(js)
    await _latest_bundle(bundles, user, NEW)
    assert await move_model_pointer(models, bundles, user, _model(user, NEW))

    assert not await move_model_pointer(models, bundles, user, _model(user, OLD))
    pointer, _ = await read_model_pointer(models, user)
    assert pointer == _model(user, NEW)


async def test_the_same_model_again_writes_nothing_and_a_new_one_replaces_it(js: Any) -> None:
    models, bundles, user = await _buckets(js)
    await _latest_bundle(bundles, user, NEW)
    assert await move_model_pointer(models, bundles, user, _model(user, NEW))
    _, first = await read_model_pointer(models, user)

    assert await move_model_pointer(models, bundles, user, _model(user, NEW))
    assert (await read_model_pointer(models, user))[1] == first

    retrained = _model(user, NEW, "m2")
    assert await move_model_pointer(models, bundles, user, retrained)
    pointer, revision = await read_model_pointer(models, user)
    assert pointer == retrained and revision is not None and first is not None
    assert revision > first


async def test_without_a_bundle_pointer_any_model_may_be_pointed_at(js: Any) -> None:
    models, bundles, user = await _buckets(js)

    assert await latest_bundle_hash(bundles, user) is None
    assert await move_model_pointer(models, bundles, user, _model(user, OLD))
    assert (await read_model_pointer(models, user))[0] == _model(user, OLD)


async def test_racing_publishers_all_finish_and_one_of_their_models_is_pointed_at(js: Any) -> None:
    # Each reads the pointer before any writes: all but one lose the create (and the updates
    # after it) and must re-read and try again, not fail the training.
    models, bundles, user = await _buckets(js)
    await _latest_bundle(bundles, user, NEW)
    racing = [_model(user, NEW, f"m{n}") for n in range(12)]

    moved = await asyncio.gather(*(move_model_pointer(models, bundles, user, m) for m in racing))

    assert all(moved)
    pointer, _ = await read_model_pointer(models, user)
    assert pointer in racing
