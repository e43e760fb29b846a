"""The retention sweep's smaller decisions, each pinned by a test that a slip in it fails
(tools/mutation.py, targets retention-sweep and retention-fence): one sweep at a time, a dead
sweep's mark taken over, a dry run that takes no mark, the lease that stops deleting, which of
a bundle's indexes stays, and a writer that holds every key even after losing one."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from contextmesh.bundle.v1 import bundle_pb2

from gateway.retention import RetentionSweep
from meshkit.blob import BlobStore
from meshkit.config import RetentionSettings
from meshkit.domain.retention_fence import DOOMED, KEPT, SWEEP_KEY, RetentionFence, hold_key
from meshkit.erasure import exists_now, purge, read_now
from meshkit.rpc import FailedPrecondition
from meshkit.topology import Buckets
from tests.gateway.conftest import Gateway
from tests.support.inproc import fs_blobs  # noqa: F401 - fixture
from tests.support.polling import holds_throughout

LEASE_S = 600.0


def sweep(gateway: Gateway, *, lease_s: float = LEASE_S) -> RetentionSweep:
    return RetentionSweep(
        gateway.js, gateway.blobs, RetentionSettings(keep_bundles=1, lease_s=lease_s)
    )


async def mark(gateway: Gateway, started: float) -> None:
    retention = await gateway.js.key_value(Buckets.RETENTION.name)
    await retention.put(SWEEP_KEY, json.dumps({"id": "other", "started": started}).encode())


async def garbage(blobs: BlobStore, user: str, n: int = 3) -> set[str]:
    """Results no bundle, job or entry references."""
    keys = {f"repos/{user}/r{i}/{str(i) * 64}.json" for i in range(n)}
    for key in keys:
        await blobs.put(key, b"{}")
    return keys


async def test_a_sweep_is_refused_while_another_holds_a_fresh_mark_and_leaves_it(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    keys = await garbage(blobs, user)
    await mark(gateway, time.time())
    with pytest.raises(FailedPrecondition, match="under way"):
        await sweep(gateway).run(dry_run=False)
    found = await read_now(gateway.js, Buckets.RETENTION, SWEEP_KEY)
    assert found is not None and json.loads(found[0])["id"] == "other"
    assert all([await blobs.exists(k) for k in keys])


async def test_the_mark_of_a_sweep_older_than_the_lease_is_taken_over(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    keys = await garbage(blobs, user)
    await mark(gateway, time.time() - LEASE_S - 5)
    report = await sweep(gateway).run(dry_run=False)
    assert report.kinds["repos"].count == len(keys)
    assert not await exists_now(gateway.js, Buckets.RETENTION, SWEEP_KEY)


async def test_a_dry_run_takes_no_mark_and_runs_beside_a_sweep(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    keys = await garbage(blobs, user)
    await mark(gateway, time.time())
    report = await sweep(gateway).run(dry_run=True)
    assert set(report.kinds["repos"].keys) == keys
    found = await read_now(gateway.js, Buckets.RETENTION, SWEEP_KEY)
    assert found is not None and json.loads(found[0])["id"] == "other"


async def test_a_sweep_past_its_lease_deletes_nothing_more(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    keys = await garbage(blobs, user)
    report = await sweep(gateway, lease_s=1e-9).run(dry_run=False)
    assert report.kinds["repos"].count == 0
    assert all([await blobs.exists(k) for k in keys])


async def test_of_a_bundle_kept_only_its_newest_index_and_the_pointers_stay(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    """Unchanged refreshes add an index each to the same bundle: the older ones go."""
    digest = "e" * 64
    await blobs.put(f"bundles/{user}/{digest}.json", b"{}")
    jobs = [
        "01AAAAAAAAAAAAAAAAAAAAAAAA",
        "01BBBBBBBBBBBBBBBBBBBBBBBB",
        "01CCCCCCCCCCCCCCCCCCCCCCCC",
    ]
    indexes = [f"bundles/{user}/{digest}/{job}.index.binpb" for job in jobs]
    for key in indexes:
        await blobs.put(key, bundle_pb2.BundleIndex(user=user).SerializeToString())

    report = await sweep(gateway).run(dry_run=False)

    assert set(report.kinds["bundles"].keys) == set(indexes[:2])
    assert await blobs.exists(indexes[2]) and await blobs.exists(f"bundles/{user}/{digest}.json")


async def test_a_writer_that_lost_one_blob_still_holds_the_others(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    """Without bytes to restore from, a lost blob is reported and the writer goes on to hold
    the rest of its keys."""
    lost, held = f"repos/{user}/a/{'a' * 64}.json", f"repos/{user}/b/{'b' * 64}.json"
    retention = await gateway.js.key_value(Buckets.RETENTION.name)
    await retention.put(SWEEP_KEY, b"{}")
    await retention.create(hold_key(lost), DOOMED)
    writer = asyncio.create_task(RetentionFence(gateway.js).keep([lost, held]))
    await holds_throughout(lambda: not writer.done(), 0.3, what="the writer waits")
    await purge(gateway.js, Buckets.RETENTION, hold_key(lost))  # the sweep released it

    assert await writer == [lost]
    found = await read_now(gateway.js, Buckets.RETENTION, hold_key(held))
    assert found is not None and found[0] == KEPT
