"""The retention sweep (gateway/retention.py) on a real nats-server and the filesystem store,
over bundles that real refreshes built (discovery, sync and merge in-process, the local
source): it keeps each user's last K bundles and what they need, and nothing a pointer or a
running job references goes, even when a refresh starts reusing an old blob mid-sweep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks

from gateway.retention import KINDS, Decided, RetentionSweep, SweepReport
from meshkit.blob import BlobStore
from meshkit.config import RetentionSettings
from meshkit.domain.ids import new_job_id
from meshkit.domain.pointers import read_bundle_pointer
from meshkit.domain.retention_fence import DOOMED, SWEEP_KEY, RetentionFence, hold_key
from meshkit.erasure import exists_now, purge
from meshkit.errors import ConflictError
from meshkit.topology import Buckets
from syncsvc.http_cache import SharedResponseCache
from syncsvc.sources.base import CachedResponse
from tests.gateway.conftest import Gateway
from tests.gateway.test_refresh_path import Workers, open_workers
from tests.support.inproc import (
    RepoFolders,
    fs_blobs,  # noqa: F401 - fixture
    syncing_job,
)
from tests.support.polling import holds_throughout

REPOS = ("alpha", "beta", "gamma")


@pytest.fixture
def repos(tmp_path: Path, user: str) -> RepoFolders:
    folders = RepoFolders(tmp_path / "repos")
    for name in REPOS:
        folders.add(user, name, description=f"The {name} project.", readme=f"# {name}\n")
    return folders


@pytest.fixture
async def workers(gateway: Gateway, blobs: BlobStore, repos: RepoFolders) -> Workers:
    return await open_workers(gateway, blobs, repos.root, training=False)


def sweep(gateway: Gateway, keep: int, decided: Decided | None = None) -> RetentionSweep:
    return RetentionSweep(
        gateway.js, gateway.blobs, RetentionSettings(keep_bundles=keep), decided=decided
    )


async def refresh(
    gateway: Gateway, workers: Workers, repos: RepoFolders, user: str, alpha: str
) -> bundle_pb2.BundlePointer:
    """A whole refresh with alpha's description set to `alpha`; the pointer it leaves."""
    repos.add(user, "alpha", description=alpha, readme="# alpha\n")
    job, _ = await gateway.refresher.refresh(user, force=False)
    await workers.all()
    assert (await workers.job(job.id)).state == job_pb2.JOB_STATE_DONE
    pointer = await read_bundle_pointer(await gateway.js.key_value(Buckets.BUNDLES.name), user)
    assert pointer is not None and pointer.job_id == job.id
    return pointer


async def stored(blobs: BlobStore) -> set[str]:
    return {info.key async for info in blobs.list("")}


async def index_of(blobs: BlobStore, key: str) -> bundle_pb2.BundleIndex:
    return bundle_pb2.BundleIndex.FromString(await blobs.get(key))


async def bundle_needs(blobs: BlobStore, pointer: bundle_pb2.BundlePointer) -> set[str]:
    """The blobs a bundle pointer's reader follows: document, index, every result."""
    index = await index_of(blobs, pointer.index_key)
    return {pointer.bundle.blob_key, pointer.index_key} | {r.result_key for r in index.repositories}


def deleted_keys(report: SweepReport) -> set[str]:
    return {key for garbage in report.kinds.values() for key in garbage.keys}


async def add_model(blobs: BlobStore, user: str, digest: str) -> str:
    key = f"models/{user}/{digest}/cfg/manifest.json"
    await blobs.put(key, b"{}")
    return key


async def test_the_last_k_bundles_stay_with_their_models_and_results_and_older_ones_go(
    gateway: Gateway, workers: Workers, repos: RepoFolders, user: str
) -> None:
    pointers = [await refresh(gateway, workers, repos, user, f"version {n}") for n in range(4)]
    models = [await add_model(gateway.blobs, user, p.bundle.content_hash) for p in pointers]
    newest = pointers[-1]
    await (await gateway.js.key_value(Buckets.MODELS.name)).put(
        user,
        bundle_pb2.ModelPointer(
            model_key=f"models/{user}/{newest.bundle.content_hash}/cfg",
            bundle_hash=newest.bundle.content_hash,
        ).SerializeToString(),
    )
    needed = [await bundle_needs(gateway.blobs, p) for p in pointers]
    old = (needed[0] | needed[1]) - (needed[2] | needed[3])

    report = await sweep(gateway, keep=2).run(dry_run=False)

    left = await stored(gateway.blobs)
    assert needed[2] | needed[3] | {models[2], models[3]} <= left
    assert not (old | {models[0], models[1]}) & left
    assert deleted_keys(report) >= old | {models[0], models[1]}
    assert report.kinds["bundles"].count == 4  # two documents and their indexes
    assert report.kinds["repos"].count == 2  # alpha's first two results
    assert report.kinds["models"].count == 2
    assert report.kinds["jobs"].count == 4  # every finished job's plan


async def test_a_pointer_keeps_its_bundle_even_when_newer_ones_exist(
    gateway: Gateway, workers: Workers, repos: RepoFolders, user: str
) -> None:
    first = await refresh(gateway, workers, repos, user, "first")
    second = await refresh(gateway, workers, repos, user, "second")
    # The user's pointer back at the first bundle (as a foreign-free, older pointer would be).
    bundles = await gateway.js.key_value(Buckets.BUNDLES.name)
    await bundles.put(user, first.SerializeToString())

    await sweep(gateway, keep=1).run(dry_run=False)

    left = await stored(gateway.blobs)
    assert await bundle_needs(gateway.blobs, first) <= left
    assert await bundle_needs(gateway.blobs, second) <= left  # the newest, K = 1


async def test_a_dry_run_deletes_nothing_and_reports_what_the_sweep_then_deletes(
    gateway: Gateway, workers: Workers, repos: RepoFolders, user: str
) -> None:
    for n in range(3):
        await refresh(gateway, workers, repos, user, f"version {n}")
    before = await stored(gateway.blobs)

    dry = await sweep(gateway, keep=1).run(dry_run=True)

    assert await stored(gateway.blobs) == before
    assert dry.dry_run and deleted_keys(dry)
    real = await sweep(gateway, keep=1).run(dry_run=False)
    assert deleted_keys(real) == deleted_keys(dry)
    assert {k: (g.count, g.bytes) for k, g in real.kinds.items()} == {
        k: (g.count, g.bytes) for k, g in dry.kinds.items()
    }
    assert await stored(gateway.blobs) == before - deleted_keys(dry)
    assert list(real.kinds) == list(KINDS)


async def test_what_a_running_job_references_stays_and_a_finished_jobs_plan_goes(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    running, _ = await gateway.refresher.refresh(user, force=False)
    await gateway.jobs.end(
        running.id, job_pb2.JOB_STATE_CANCELLED, "made way", code=job_pb2.ERROR_CODE_CANCELLED
    )
    ended, job_id = running.id, new_job_id()
    await syncing_job(gateway.jobs, user, 2, job_id)
    carried, synced = f"repos/{user}/old/{'a' * 64}.json", f"repos/{user}/new/{'b' * 64}.json"
    await blobs.put(carried, b"{}")
    await blobs.put(synced, b"{}")
    plan = {"repositories": [{"previous_result_key": carried}], "base_bundle_hash": ""}
    await blobs.put(f"jobs/{job_id}/plan.json", json.dumps(plan).encode())
    await blobs.put(f"jobs/{ended}/plan.json", json.dumps(plan).encode())
    outcome = sync_tasks.RepoOutcome(repository=f"{user}/new", index=1, result_key=synced)
    await (await gateway.js.key_value(Buckets.OUTCOMES.name)).put(
        f"{job_id}.1", outcome.SerializeToString()
    )

    report = await sweep(gateway, keep=1).run(dry_run=False)

    left = await stored(blobs)
    assert {carried, synced, f"jobs/{job_id}/plan.json"} <= left
    assert deleted_keys(report) == {f"jobs/{ended}/plan.json"}


async def test_a_cached_body_stays_while_an_entry_names_it(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    cache = await SharedResponseCache.open(gateway.js, blobs)
    url = f"https://api.github.com/repos/{user}/alpha/readme"
    await cache.put(url, CachedResponse(etag='"1"', body=b"old body"))
    await cache.put(url, CachedResponse(etag='"2"', body=b"new body"))

    report = await sweep(gateway, keep=1).run(dry_run=False)

    assert report.kinds["http-cache"].count == 1
    cached = await cache.get(url)
    assert cached is not None and cached.body == b"new body"


# --- the race: a refresh that reuses old blobs while the sweep runs -------------------------


async def test_a_refresh_reusing_swept_blobs_mid_sweep_leaves_a_complete_bundle(
    gateway: Gateway, workers: Workers, repos: RepoFolders, user: str
) -> None:
    """The sweep decides that bundle A (and alpha's result in it) is garbage; between that and
    its deletes, a refresh brings alpha back to A's content: its sync stores the same result
    and its merge the same bundle, both already there, so neither is written again. The
    writers' fence keeps them, and the new pointer's bundle is whole."""
    first = await refresh(gateway, workers, repos, user, "as it was")
    await refresh(gateway, workers, repos, user, "changed")
    reused = await bundle_needs(gateway.blobs, first) - {first.index_key}
    moved: list[bundle_pb2.BundlePointer] = []
    doomed: set[str] = set()

    async def refresh_back(candidates: Mapping[str, int]) -> None:
        doomed.update(reused & set(candidates))
        moved.append(await refresh(gateway, workers, repos, user, "as it was"))

    report = await sweep(gateway, keep=1, decided=refresh_back).run(dry_run=False)

    pointer = moved[0]
    assert pointer.bundle.content_hash == first.bundle.content_hash  # the very same bundle
    left = await stored(gateway.blobs)
    assert await bundle_needs(gateway.blobs, pointer) <= left
    # Bundle A's document and alpha's result in it were decided on, then kept by the fence.
    assert len(doomed) == 2 and not doomed & deleted_keys(report)
    assert report.spared == 2
    assert not await exists_now(gateway.js, Buckets.RETENTION, SWEEP_KEY)


async def test_a_cache_entry_written_mid_sweep_keeps_its_old_body(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    cache = await SharedResponseCache.open(gateway.js, blobs)
    url = f"https://api.github.com/repos/{user}/alpha/readme"
    await cache.put(url, CachedResponse(etag='"1"', body=b"first body"))
    await cache.put(url, CachedResponse(etag='"2"', body=b"second body"))

    async def back_to_first(candidates: Mapping[str, int]) -> None:
        assert len(candidates) == 1  # the first body, orphaned
        await cache.put(url, CachedResponse(etag='"3"', body=b"first body"))

    report = await sweep(gateway, keep=1, decided=back_to_first).run(dry_run=False)

    assert report.spared == 1
    cached = await cache.get(url)
    assert cached is not None and cached.body == b"first body"


async def test_a_writer_that_finds_its_blob_doomed_stores_it_again_once_released(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    """The other order: the sweep won the hold first. The writer waits for the sweep to delete
    the blob and release the hold, then stores it again from its bytes."""
    key = f"repos/{user}/alpha/{'c' * 64}.json"
    await blobs.put(key, b"result")
    retention = await gateway.js.key_value(Buckets.RETENTION.name)
    await retention.put(SWEEP_KEY, b"{}")
    await retention.create(hold_key(key), DOOMED)
    writer = asyncio.create_task(
        RetentionFence(gateway.js).keep([key], lambda k: blobs.put(k, b"result"))
    )
    await holds_throughout(lambda: not writer.done(), 0.5, what="the writer waits")
    await blobs.delete(key)  # the sweep deletes, then releases the hold
    await purge(gateway.js, Buckets.RETENTION, hold_key(key))
    assert await writer == []
    assert await blobs.get(key) == b"result"


async def test_a_discovery_whose_carried_result_was_swept_syncs_that_repository_again(
    gateway: Gateway, workers: Workers, repos: RepoFolders, user: str
) -> None:
    """The sweep won the hold of a result the next refresh carries over unchanged: discovery
    waits for the sweep to release it, then plans that repository stale, and the bundle is
    whole (had it carried the deleted result, the merge could not read it)."""
    first = await refresh(gateway, workers, repos, user, "unchanged")
    alpha = next(
        r.result_key
        for r in (await index_of(gateway.blobs, first.index_key)).repositories
        if r.repository.endswith("/alpha")
    )
    retention = await gateway.js.key_value(Buckets.RETENTION.name)
    await retention.put(SWEEP_KEY, b"{}")
    await retention.create(hold_key(alpha), DOOMED)
    job, _ = await gateway.refresher.refresh(user, force=False)

    discovery = asyncio.create_task(workers.discovery())
    await holds_throughout(lambda: not discovery.done(), 0.5, what="discovery waits")
    await gateway.blobs.delete(alpha)  # the sweep deletes, then releases the hold
    await purge(gateway.js, Buckets.RETENTION, hold_key(alpha))
    await purge(gateway.js, Buckets.RETENTION, SWEEP_KEY)
    await discovery
    await workers.syncs()
    await workers.merges()

    assert (await workers.job(job.id)).state == job_pb2.JOB_STATE_DONE
    pointer = await read_bundle_pointer(await gateway.js.key_value(Buckets.BUNDLES.name), user)
    assert pointer is not None and pointer.job_id == job.id
    assert await bundle_needs(gateway.blobs, pointer) <= await stored(gateway.blobs)
    index = await index_of(gateway.blobs, pointer.index_key)
    statuses = {r.repository.rsplit("/", 1)[1]: r.status for r in index.repositories}
    assert statuses == {
        "alpha": job_pb2.REPO_STATUS_SYNCED,
        "beta": job_pb2.REPO_STATUS_UNCHANGED,
        "gamma": job_pb2.REPO_STATUS_UNCHANGED,
    }


async def test_a_writer_gives_up_on_a_hold_no_sweep_releases(
    gateway: Gateway, blobs: BlobStore, user: str
) -> None:
    """A sweep that died between dooming and deleting leaves the hold until the next sweep
    empties it: the writer fails its attempt after its wait (the task is retried)."""
    key = f"repos/{user}/alpha/{'d' * 64}.json"
    retention = await gateway.js.key_value(Buckets.RETENTION.name)
    await retention.put(SWEEP_KEY, b"{}")
    await retention.create(hold_key(key), DOOMED)
    with pytest.raises(ConflictError, match="still holds"):
        await RetentionFence(gateway.js, wait_s=0.3).keep([key], lambda k: blobs.put(k, b"x"))
    assert not await blobs.exists(key)
