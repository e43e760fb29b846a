"""Reading the users' pointers from their KV buckets, on a real nats-server."""

from __future__ import annotations

import uuid
from typing import Any

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2

from mergesvc.merge import move_bundle_pointer
from meshkit.domain.pointers import (
    bundle_pointer_problem,
    model_pointer_problem,
    read_bundle_pointer,
    read_message,
    read_model_pointer,
)
from meshkit.topology import Buckets


async def test_a_user_without_a_pointer_reads_as_none(js: Any) -> None:
    user = f"u{uuid.uuid4().hex[:12]}"
    assert await read_bundle_pointer(await js.key_value(Buckets.BUNDLES.name), user) is None
    assert await read_model_pointer(await js.key_value(Buckets.MODELS.name), user) == (None, None)


async def test_a_stored_pointer_reads_back_with_its_revision(js: Any) -> None:
    user = f"u{uuid.uuid4().hex[:12]}"
    kv = await js.key_value(Buckets.BUNDLES.name)
    stored = bundle_pb2.BundlePointer(
        bundle=job_pb2.BundleRef(content_hash="ab" * 32, repositories=3), job_id="01J0"
    )
    revision = await kv.put(user, stored.SerializeToString())

    assert await read_message(kv, user, bundle_pb2.BundlePointer) == (stored, revision)
    assert await read_bundle_pointer(kv, user) == stored


async def test_an_empty_entry_is_no_pointer_but_keeps_its_revision(js: Any) -> None:
    # A compare-and-set writer needs the revision to replace it.
    user = f"u{uuid.uuid4().hex[:12]}"
    kv = await js.key_value(Buckets.MODELS.name)
    revision = await kv.put(user, b"")
    assert await read_model_pointer(kv, user) == (None, revision)


async def test_a_bundle_pointer_without_a_bundle_is_no_bundle(js: Any) -> None:
    user = f"u{uuid.uuid4().hex[:12]}"
    kv = await js.key_value(Buckets.BUNDLES.name)
    await kv.put(user, bundle_pb2.BundlePointer(job_id="01J0").SerializeToString())
    assert await read_bundle_pointer(kv, user) is None


async def test_a_pointer_naming_another_users_keys_is_ignored_with_a_warning(
    js: Any, caplog: Any
) -> None:
    user = f"u{uuid.uuid4().hex[:12]}"
    bundles = await js.key_value(Buckets.BUNDLES.name)
    foreign = bundle_pb2.BundlePointer(
        bundle=job_pb2.BundleRef(content_hash="ab" * 32, blob_key="bundles/alice/ab.json"),
        index_key=f"bundles/{user}/ab/01J0.index.binpb",
        job_id="01J0",
    )
    await bundles.put(user, foreign.SerializeToString())
    assert bundle_pointer_problem(foreign, user) == f"bundle.blob_key outside bundles/{user}/"
    assert await read_bundle_pointer(bundles, user) is None
    assert f"ignoring the bundle pointer of {user!r}" in caplog.text

    # A prefix that merely starts alike is someone else's ("bob" is not "bobby").
    lookalike = bundle_pb2.BundlePointer(
        bundle=job_pb2.BundleRef(content_hash="ab" * 32, blob_key=f"bundles/{user}x/a.json")
    )
    assert bundle_pointer_problem(lookalike, user) is not None

    models = await js.key_value(Buckets.MODELS.name)
    model = bundle_pb2.ModelPointer(model_key=f"models/{user}/h/c/m", embeddings_key="jobs/1/x")
    revision = await models.put(user, model.SerializeToString())
    assert model_pointer_problem(model, user) == f"embeddings_key outside models/{user}/"
    # No pointer, but the revision, so trainsvc's next compare-and-set replaces it.
    assert await read_model_pointer(models, user) == (None, revision)


async def test_a_merge_replaces_a_foreign_pointer_even_one_naming_a_later_job(js: Any) -> None:
    # The attack wrote bob's pointer with alice's keys and a job id no refresh of bob's would
    # ever exceed; the next merge of bob's must still move it.
    user = f"u{uuid.uuid4().hex[:12]}"
    bundles = await js.key_value(Buckets.BUNDLES.name)
    later = "ZZZZZZZZZZZZZZZZZZZZZZZZZZ"
    foreign = bundle_pb2.BundlePointer(
        bundle=job_pb2.BundleRef(content_hash="ab" * 32, blob_key="bundles/alice/ab.json"),
        job_id=later,
    )
    await bundles.put(user, foreign.SerializeToString())
    ref = job_pb2.BundleRef(content_hash="cd" * 32, blob_key=f"bundles/{user}/cd.json")
    job = job_pb2.Job(id="01J0000000000000000000000A", user=user)
    await move_bundle_pointer(bundles, job, ref, f"bundles/{user}/cd/{job.id}.index.binpb")
    moved = await read_bundle_pointer(bundles, user)
    assert moved is not None and moved.job_id == job.id and moved.bundle == ref

    # A pointer of the user's own later job still wins over an older merge.
    mine_later = bundle_pb2.BundlePointer(bundle=ref, job_id=later)
    await bundles.put(user, mine_later.SerializeToString())
    await move_bundle_pointer(bundles, job, ref, f"bundles/{user}/cd/{job.id}.index.binpb")
    kept = await read_bundle_pointer(bundles, user)
    assert kept is not None and kept.job_id == later
