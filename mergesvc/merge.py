"""A job's bundle from its repository outcomes: read them, build the document and its index,
move the user's pointer, and mark the job ready.

Same inputs, same bytes: the bundle and its index are content-addressed, so storing them
again is harmless. The pointer moves by compare-and-set and never back to an older job's
bundle; the job moves MERGING -> BUNDLE_READY (or DONE) in one compare-and-set that also
counts the merge, so `merges` is 1 however often a merge runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2, job_record_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.domain.documents import Bundle, BundleRepository, RepositoryResult
from meshkit.domain.pointers import bundle_pointer_problem
from meshkit.erasure import purge, read_now
from meshkit.jobs import Mutation
from meshkit.topology import Buckets
from meshkit.worker import RetryLater

__all__ = [
    "build_bundle",
    "bundle_index",
    "mark_ready",
    "move_bundle_pointer",
    "read_outcomes",
    "read_results",
    "take_back_bundle",
]

JobState = job_pb2.JobState
RepoStatus = job_pb2.RepoStatus


def build_bundle(
    user: str,
    outcomes: list[sync_tasks.RepoOutcome],
    results: Mapping[str, RepositoryResult],
) -> Bundle:
    """The bundle: every repository's result, sorted by name. Job-specific outcomes stay out
    of it so that unchanged content keeps its hash."""
    repositories = []
    for outcome in sorted(outcomes, key=lambda o: o.repository.lower()):
        result = results.get(outcome.result_key) or RepositoryResult.placeholder(
            outcome.repository, outcome.fingerprint, tuple(outcome.warnings)
        )
        failed = outcome.status == RepoStatus.REPO_STATUS_FAILED
        repositories.append(
            BundleRepository(result, (outcome.reason or "sync failed") if failed else None)
        )
    return Bundle(user, tuple(repositories))


def bundle_index(
    user: str, digest: str, outcomes: list[sync_tasks.RepoOutcome]
) -> bundle_pb2.BundleIndex:
    """The bundle's small index: each repository's fingerprint and status, which the next
    discovery reads instead of the bundle."""
    return bundle_pb2.BundleIndex(
        user=user,
        content_hash=digest,
        repositories=[
            bundle_pb2.RepoEntry(
                repository=o.repository,
                fingerprint=o.fingerprint,
                status=o.status,
                warnings=o.warnings,
                reason=o.reason,
                result_key=o.result_key,
            )
            for o in sorted(outcomes, key=lambda o: o.repository.lower())
        ],
    )


async def read_outcomes(
    outcomes: KeyValue, job_id: str, total: int
) -> list[sync_tasks.RepoOutcome]:
    """Every repository outcome of the job, by index; RetryLater while one is missing."""

    async def one(index: int) -> sync_tasks.RepoOutcome:
        entry = await outcomes.get(f"{job_id}.{index}")
        outcome = sync_tasks.RepoOutcome()
        outcome.ParseFromString(entry.value or b"")
        return outcome

    found: list[sync_tasks.RepoOutcome] = []
    try:
        for start in range(0, total, 128):
            found += await asyncio.gather(*(one(i) for i in range(start, min(total, start + 128))))
    except KeyNotFoundError:
        raise RetryLater(1.0, f"job {job_id}: an outcome is not stored yet") from None
    return found


async def read_results(
    blobs: BlobStore, outcomes: list[sync_tasks.RepoOutcome]
) -> dict[str, RepositoryResult]:
    """The stored repository results the outcomes name, by result key."""
    keys = sorted({o.result_key for o in outcomes if o.result_key})
    results: dict[str, RepositoryResult] = {}

    async def load(key: str) -> None:
        results[key] = RepositoryResult.from_json(json.loads(await blobs.get(key)))

    for start in range(0, len(keys), 32):
        await asyncio.gather(*(load(k) for k in keys[start : start + 32]))
    return results


async def move_bundle_pointer(
    pointers: KeyValue, job: job_pb2.Job, ref: job_pb2.BundleRef, index_key: str
) -> None:
    """Point the user at this job's bundle, unless a newer job's bundle is there already."""
    pointer = bundle_pb2.BundlePointer(bundle=ref, index_key=index_key, job_id=job.id)
    pointer.create_time.GetCurrentTime()
    value = pointer.SerializeToString(deterministic=True)
    for _ in range(50):
        try:
            entry = await pointers.get(job.user)
        except KeyNotFoundError:
            entry = None
        try:
            if entry is None or not entry.value:
                await pointers.create(job.user, value)
                return
            current = bundle_pb2.BundlePointer()
            current.ParseFromString(entry.value)
            # Job ids sort by creation time: never replace a newer job's bundle (unless
            # the pointer is foreign: keys outside the user's prefix, meshkit.domain.pointers).
            if current.job_id >= job.id and bundle_pointer_problem(current, job.user) is None:
                return
            await pointers.update(job.user, value, last=entry.revision)
            return
        except KeyWrongLastSequenceError:
            continue
    raise RuntimeError(f"could not move the bundle pointer of {job.user!r}")


async def take_back_bundle(
    js: JetStreamContext,
    blobs: BlobStore,
    job: job_pb2.Job,
    ref: job_pb2.BundleRef,
    index_key: str,
) -> None:
    """Undo a merge whose job was forgotten meanwhile: the pointer if it names this job, and
    the bundle and its index unless the pointer names them (a refresh after the forgetting
    may have built the same bundle)."""
    kept: set[str] = set()
    found = await read_now(js, Buckets.BUNDLES, job.user)
    if found is not None:
        current = bundle_pb2.BundlePointer.FromString(found[0])
        if current.job_id == job.id:
            await purge(js, Buckets.BUNDLES, job.user)
        else:
            kept = {current.bundle.blob_key, current.index_key}
    for key in (ref.blob_key, index_key):
        if key not in kept:
            await blobs.delete(key)


def mark_ready(
    ref: job_pb2.BundleRef, serving: bundle_pb2.ModelPointer | None, *, training: bool
) -> Mutation:
    """MERGING -> BUNDLE_READY with training QUEUED; or straight to DONE when training is off
    or `serving`, the user's model, was tuned on this bundle already."""

    def mutate(record: job_record_pb2.JobRecord) -> bool:
        if record.job.state != JobState.JOB_STATE_MERGING:
            return False
        job = record.job
        record.merges += 1
        job.bundle.CopyFrom(ref)
        job.bundle_ready_time.GetCurrentTime()
        if not training:
            job.state = JobState.JOB_STATE_DONE
            job.training.state = job_pb2.TRAINING_STATE_DISABLED
        elif serving is not None:
            job.state = JobState.JOB_STATE_DONE
            job.training.state = job_pb2.TRAINING_STATE_SKIPPED
            job.training.reason = (
                f"the serving model was tuned on bundle {ref.content_hash[:12]} already; "
                "no training needed"
            )
            job.training.model_key = serving.model_key
            job.training.base.CopyFrom(serving.base_metrics)
            job.training.tuned.CopyFrom(serving.metrics)
        else:
            job.state = JobState.JOB_STATE_BUNDLE_READY
            job.training.state = job_pb2.TRAINING_STATE_QUEUED
        return True

    return mutate
