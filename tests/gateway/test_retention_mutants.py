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
from contextmesh.job.v1 import job_pb2, job_record_pb2

from gateway.retention import RetentionSweep
from meshkit.blob import BlobStore
from meshkit.config import RetentionSettings
from meshkit.domain.retention_fence import DOOMED, KEPT, SWEEP_KEY, RetentionFence, hold_key
from meshkit.erasure import exists_now, purge, read_now
from meshkit.rpc import FailedPrecondition
from meshkit.topology import Buckets
from tests.gateway.conftest import Gateway
from tests.support.inproc import (
    fs_blobs,  # noqa: F401 - fixture
    syncing_job,
)
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
    assert report.kinds["repos"].count == len(keys) and not report.dry_run
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


async def test_a_dry_run_spares_nothing_and_leaves_the_holds_a_real_sweep_empties(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    """A hold left from an earlier sweep means nothing to this one: a real sweep empties the
    holds first, a dry run (which may run beside a real sweep) leaves them alone."""
    keys = await garbage(blobs, user, 1)
    (key,) = keys
    retention = await gateway.js.key_value(Buckets.RETENTION.name)
    await retention.put(hold_key(key), KEPT)

    dry = await sweep(gateway).run(dry_run=True)
    assert dry.spared == 0 and set(dry.kinds["repos"].keys) == keys
    assert await exists_now(gateway.js, Buckets.RETENTION, hold_key(key))

    report = await sweep(gateway).run(dry_run=False)
    assert (report.kinds["repos"].count, report.spared) == (1, 0)
    assert not await blobs.exists(key)


async def bundle(blobs: BlobStore, user: str, digest: str, job_id: str) -> list[str]:
    """A bundle document, its index and a model file; their keys."""
    keys = [
        f"bundles/{user}/{digest}.json",
        f"bundles/{user}/{digest}/{job_id}.index.binpb",
        f"models/{user}/{digest}/cfg/manifest.json",
    ]
    await blobs.put(keys[0], b"{}")
    await blobs.put(keys[1], bundle_pb2.BundleIndex(user=user).SerializeToString())
    await blobs.put(keys[2], b"{}")
    return keys


async def test_the_model_pointers_bundle_stays_when_newer_ones_exist(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    serving = await bundle(blobs, user, "1" * 64, f"01{'A' * 24}")
    newer = await bundle(blobs, user, "2" * 64, f"01{'B' * 24}")
    pointer = bundle_pb2.ModelPointer(
        model_key=f"models/{user}/{'1' * 64}/cfg", bundle_hash="1" * 64
    )
    await (await gateway.js.key_value(Buckets.MODELS.name)).put(user, pointer.SerializeToString())
    report = await sweep(gateway).run(dry_run=False)
    assert sum(g.count for g in report.kinds.values()) == 0
    assert all([await blobs.exists(k) for k in serving + newer])


async def test_a_running_jobs_bundle_stays_when_newer_ones_exist(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    training = await bundle(blobs, user, "3" * 64, f"01{'C' * 24}")
    newer = await bundle(blobs, user, "4" * 64, f"01{'D' * 24}")
    job_id = f"01{'C' * 24}"
    await syncing_job(gateway.jobs, user, 0, job_id)

    def train(record: job_record_pb2.JobRecord) -> bool:
        record.job.state = job_pb2.JOB_STATE_TRAINING
        record.job.bundle.content_hash = "3" * 64
        record.job.bundle.blob_key = training[0]
        return True

    await gateway.jobs.update(job_id, train)
    report = await sweep(gateway).run(dry_run=False)
    assert sum(g.count for g in report.kinds.values()) == 0
    assert all([await blobs.exists(k) for k in training + newer])
