"""The retention sweep (OpsService.CollectGarbage, `contextmesh gc`): keep per user the last K
bundles and what they need, delete every other blob of the pipeline.

Kept (docs/architecture.md, "Retention"):
- per user, the K newest bundles (newest: the latest job id among a bundle's indexes), the
  bundle each pointer names (cm_bundles, and cm_models' bundle), and the bundle of every
  running job; of each kept bundle its document, its newest index (and the one the pointer
  names), its models, and the repository results those indexes list;
- for every running job (not final): its plan and what it references, its outcomes' results;
- every cached response body a cm_http_cache entry names.
Everything else under bundles/, models/, repos/, http-cache/ and jobs/ goes.

The sweep and the writers fence (meshkit/domain/retention_fence.py): mark the sweep, empty the
holds, list the blobs, then read the references (running jobs before pointers: a job ends only
after its pointer moved), and delete a blob only after winning its `doomed` hold. Listing
before reading matters: a blob written after the listing is never a candidate, and one written
before it is referenced before its writer looks for the mark. A dry run reads the same way and
writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.config import RetentionSettings
from meshkit.domain.retention_fence import DOOMED, SWEEP_KEY, hold_key
from meshkit.domain.user_data import job_blob_prefix
from meshkit.erasure import purge, read_now
from meshkit.errors import BlobNotFoundError
from meshkit.jobs import WATCH_INACTIVE_S, is_final, stop_watcher
from meshkit.rpc import FailedPrecondition
from meshkit.topology import Bucket, Buckets

__all__ = ["KINDS", "Garbage", "RetentionSweep", "SweepReport"]

log = logging.getLogger(__name__)

KINDS = ("bundles", "models", "repos", "http-cache", "jobs")
"""The blob prefixes the sweep manages, each a kind in its report; nothing else is touched."""

_PARALLEL = 32


@dataclass
class Garbage:
    """The blobs of one kind that go (or went): how many, their bytes, their keys."""

    count: int = 0
    bytes: int = 0
    keys: list[str] = field(default_factory=list)

    def add(self, key: str, size: int) -> None:
        self.count += 1
        self.bytes += size
        self.keys.append(key)


@dataclass(frozen=True)
class SweepReport:
    """What a sweep found to delete (a dry run) or deleted, by kind; `spared` counts the
    candidates a writer kept through the fence while the sweep ran."""

    kinds: Mapping[str, Garbage]
    spared: int
    dry_run: bool


Decided = Callable[[Mapping[str, int]], Awaitable[object]]
"""Called with the candidates (key -> size) between deciding and deleting: a test's seam."""


class RetentionSweep:
    def __init__(
        self,
        js: JetStreamContext,
        blobs: BlobStore,
        settings: RetentionSettings,
        *,
        decided: Decided | None = None,
    ) -> None:
        self.js = js
        self.blobs = blobs
        self.settings = settings
        self.decided = decided

    async def run(self, *, dry_run: bool) -> SweepReport:
        """Sweep once; FailedPrecondition while another sweep holds the mark."""
        started = time.time()
        if not dry_run:
            await self._mark(started)
        try:
            if not dry_run:
                await purge(self.js, Buckets.RETENTION, "hold.>")
            listed = await self._list()
            live, live_prefixes = await self._live(listed)
            candidates = {
                key: size
                for key, size in listed.items()
                if key not in live and not key.startswith(live_prefixes)
            }
            if dry_run:
                return SweepReport(_by_kind(candidates), 0, dry_run=True)
            if self.decided is not None:
                await self.decided(candidates)
            deleted, spared = await self._delete(candidates, started)
            log.info(
                "retention sweep: %d blobs deleted, %d bytes, %d kept by writers",
                sum(g.count for g in deleted.values()),
                sum(g.bytes for g in deleted.values()),
                spared,
            )
            return SweepReport(deleted, spared, dry_run=False)
        finally:
            if not dry_run:
                await purge(self.js, Buckets.RETENTION, SWEEP_KEY)

    async def _mark(self, now: float) -> None:
        """Put the sweep's mark, or take over one older than the lease (its sweep died)."""
        kv = await self.js.key_value(Buckets.RETENTION.name)
        value = json.dumps({"id": uuid.uuid4().hex, "started": now}).encode()
        try:
            await kv.create(SWEEP_KEY, value)
            return
        except KeyWrongLastSequenceError:
            pass
        found = await read_now(self.js, Buckets.RETENTION, SWEEP_KEY)
        if found is not None:
            since = json.loads(found[0] or b"{}").get("started", 0.0)
            if now - since < self.settings.lease_s:
                raise FailedPrecondition(
                    "a retention sweep is under way (started "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(since))}); "
                    "run it again when that one has finished"
                )
        try:
            await kv.update(SWEEP_KEY, value, last=found[1] if found else 0)
        except KeyWrongLastSequenceError:
            raise FailedPrecondition("another retention sweep started just now") from None

    async def _list(self) -> dict[str, int]:
        listed: dict[str, int] = {}
        for kind in KINDS:
            async for info in self.blobs.list(f"{kind}/"):
                listed[info.key] = info.size
        return listed

    async def _live(self, listed: Mapping[str, int]) -> tuple[set[str], tuple[str, ...]]:
        """The listed blobs something references, read after the listing: keys, and key
        prefixes (a running job's folder, a kept bundle's models)."""
        live: set[str] = set()
        prefixes: set[str] = set()
        kept: dict[str, set[str]] = defaultdict(set)  # user -> bundle hashes
        indexes: set[str] = set()
        # Running jobs before pointers: a job goes final only after its pointer moved.
        for job in await self._running_jobs():
            prefixes.add(job_blob_prefix(job.id))
            live.update(await self._plan_results(job.id))
            live.update(await self._outcome_results(job.id, job.total))
            if job.bundle.content_hash:
                kept[job.user].add(job.bundle.content_hash)
        for user, value in await _entries(self.js, Buckets.BUNDLES):
            pointer = bundle_pb2.BundlePointer.FromString(value)
            kept[user].add(pointer.bundle.content_hash)
            live.add(pointer.bundle.blob_key)
            indexes.add(pointer.index_key)
        for user, value in await _entries(self.js, Buckets.MODELS):
            model = bundle_pb2.ModelPointer.FromString(value)
            kept[user].add(model.bundle_hash)  # its files lie under models/<user>/<hash>/
        for user, newest in _newest_indexes(listed).items():
            by_age = sorted(newest.items(), key=lambda item: item[1], reverse=True)
            kept[user].update(digest for digest, _ in by_age[: self.settings.keep_bundles])
            indexes.update(
                f"bundles/{user}/{digest}/{job_id}.index.binpb"
                for digest, job_id in newest.items()
                if digest in kept[user]
            )
        for user, digests in kept.items():
            for digest in digests - {""}:
                live.add(f"bundles/{user}/{digest}.json")
                prefixes.add(f"models/{user}/{digest}/")
        live.update(indexes)
        live.update(await self._index_results(indexes))
        for _, value in await _entries(self.js, Buckets.HTTP_CACHE):
            live.add(json.loads(value).get("body", ""))
        return live, tuple(sorted(prefixes))

    async def _running_jobs(self) -> list[job_pb2.Job]:
        jobs = []
        for _, value in await _entries(self.js, Buckets.JOBS):
            record = job_record_pb2.JobRecord.FromString(value)
            if not is_final(record.job.state):
                jobs.append(record.job)
        return jobs

    async def _plan_results(self, job_id: str) -> set[str]:
        """The earlier results a running job's plan (syncsvc's jobs/<job>/plan.json) names."""
        try:
            plan = json.loads(await self.blobs.get(f"{job_blob_prefix(job_id)}plan.json"))
        except BlobNotFoundError:
            return set()
        return {r.get("previous_result_key", "") for r in plan.get("repositories", [])}

    async def _outcome_results(self, job_id: str, total: int) -> set[str]:
        outcomes = await self.js.key_value(Buckets.OUTCOMES.name)

        async def one(index: int) -> str:
            try:
                entry = await outcomes.get(f"{job_id}.{index}")
            except KeyNotFoundError:
                return ""
            return sync_tasks.RepoOutcome.FromString(entry.value or b"").result_key

        found: set[str] = set()
        for start in range(0, total, _PARALLEL):
            found.update(
                await asyncio.gather(*(one(i) for i in range(start, min(total, start + _PARALLEL))))
            )
        return found

    async def _index_results(self, keys: set[str]) -> set[str]:
        async def one(key: str) -> list[str]:
            try:
                index = bundle_pb2.BundleIndex.FromString(await self.blobs.get(key))
            except (BlobNotFoundError, DecodeError):
                return []
            return [entry.result_key for entry in index.repositories]

        found: set[str] = set()
        ordered = sorted(keys)
        for start in range(0, len(ordered), _PARALLEL):
            for results in await asyncio.gather(*map(one, ordered[start : start + _PARALLEL])):
                found.update(results)
        return found

    async def _delete(
        self, candidates: Mapping[str, int], started: float
    ) -> tuple[dict[str, Garbage], int]:
        """Delete each candidate whose hold the sweep wins as doomed; the rest are spared."""
        kv = await self.js.key_value(Buckets.RETENTION.name)
        deleted: dict[str, Garbage] = {kind: Garbage() for kind in KINDS}
        spared = 0

        async def one(key: str) -> bool:
            try:
                await kv.create(hold_key(key), DOOMED)
            except KeyWrongLastSequenceError:
                return False  # a writer holds it kept
            await self.blobs.delete(key)
            await purge(self.js, Buckets.RETENTION, hold_key(key))  # a waiting writer restores
            return True

        ordered = sorted(candidates)
        for start in range(0, len(ordered), _PARALLEL):
            if time.time() - started > self.settings.lease_s:
                log.warning("retention sweep: its lease is over; stopping")
                break
            chunk = ordered[start : start + _PARALLEL]
            for key, gone in zip(chunk, await asyncio.gather(*map(one, chunk)), strict=True):
                if gone:
                    deleted[key.split("/", 1)[0]].add(key, candidates[key])
                else:
                    spared += 1
        return deleted, spared


def _by_kind(candidates: Mapping[str, int]) -> dict[str, Garbage]:
    kinds = {kind: Garbage() for kind in KINDS}
    for key in sorted(candidates):
        kinds[key.split("/", 1)[0]].add(key, candidates[key])
    return kinds


def _newest_indexes(listed: Mapping[str, int]) -> dict[str, dict[str, str]]:
    """user -> bundle hash -> the newest job id among the bundle's listed indexes (job ids
    sort by creation time)."""
    newest: dict[str, dict[str, str]] = defaultdict(dict)
    for key in listed:
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "bundles" or not parts[3].endswith(".index.binpb"):
            continue
        user, digest, job_id = parts[1], parts[2], parts[3].removesuffix(".index.binpb")
        if job_id > newest[user].get(digest, ""):
            newest[user][digest] = job_id
    return newest


async def _entries(js: JetStreamContext, bucket: Bucket) -> list[tuple[str, bytes]]:
    """Every (key, value) of a bucket with a value, from one pass of a watch."""
    kv: KeyValue = await js.key_value(bucket.name)
    watcher = await kv.watchall(ignore_deletes=True, inactive_threshold=WATCH_INACTIVE_S)
    found = []
    try:
        while (entry := await watcher.updates(timeout=30)) is not None:
            if entry.value:
                found.append((entry.key, entry.value))
    finally:
        await stop_watcher(watcher)
    return found
