"""The bundle pointer's compare-and-set, on a real nats-server: racing merges all finish and
the newest job wins; a redelivered merge of the same job does not write the pointer again.

Written against mutants tools/mutation.py found surviving in move_bundle_pointer
(docs/testing.md).
"""

from __future__ import annotations

import asyncio
import uuid

from contextmesh.job.v1 import job_pb2
from nats.js import JetStreamContext

from mergesvc.merge import move_bundle_pointer
from meshkit.domain.ids import new_job_id
from meshkit.domain.pointers import read_bundle_pointer
from meshkit.topology import Buckets


def _job(user: str) -> tuple[job_pb2.Job, job_pb2.BundleRef, str]:
    job = job_pb2.Job(id=new_job_id(), user=user)
    digest = uuid.uuid4().hex * 2
    ref = job_pb2.BundleRef(content_hash=digest, blob_key=f"bundles/{user}/{digest}.json")
    return job, ref, f"bundles/{user}/{digest}/{job.id}.index.binpb"


async def test_racing_merges_all_finish_and_the_newest_job_wins(js: JetStreamContext) -> None:
    bundles = await js.key_value(Buckets.BUNDLES.name)
    user = f"u{uuid.uuid4().hex[:12]}"
    merges = [_job(user) for _ in range(12)]

    await asyncio.gather(*(move_bundle_pointer(bundles, *merge) for merge in merges))

    pointer = await read_bundle_pointer(bundles, user)
    newest = max(merges, key=lambda merge: merge[0].id)
    assert pointer is not None and pointer.job_id == newest[0].id
    assert pointer.bundle == newest[1]


async def test_a_redelivered_merge_leaves_the_pointer_as_it_is(js: JetStreamContext) -> None:
    bundles = await js.key_value(Buckets.BUNDLES.name)
    user = f"u{uuid.uuid4().hex[:12]}"
    merge = _job(user)
    await move_bundle_pointer(bundles, *merge)
    first = await bundles.get(user)

    await move_bundle_pointer(bundles, *merge)

    assert (await bundles.get(user)).revision == first.revision
