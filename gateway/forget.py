"""DeleteUser: erase everything contextmesh holds about a user, so that nothing comes back.

The order is what makes a racing refresh unable to resurrect anything:
1. mark the user in cm_forgetting: a refresh, schedule or callback written after this sees
   the mark and takes itself back (gateway/forget_fence.py);
2. list the user's jobs (cm_history, cm_active), end those still running CANCELLED (so that
   a watch of one ends), and purge their records: every worker checks
   its job's record after writing (JobStore.require) and takes back what it wrote when the
   record is gone, and a task of a gone job is dropped, never parked (meshkit.worker);
3. erase the rest: each job's outcomes and plan; what was fetched about the user and the
   owners of the repositories in their bundles (cached responses, repository results); the
   keys named by the user (pointers, schedule, callback, pending push, history); their
   bundles and models; their dead letters and the redrive records of their jobs;
4. remove the mark.
A writer either finished before step 2 (and step 3 finds what it wrote) or finds its job gone
and erases its own writes. Keys are purged from their bucket's stream, leaving no marker that
still names the user (meshkit.erasure). Running it again is harmless, and finishes an
interrupted deletion (the mark keeps refreshes out meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from gateway.history import JobHistory
from gateway.redrive import TASK_OF, read_letter
from meshkit.blob import BlobStore
from meshkit.blob.base import delete_prefix
from meshkit.domain.user_data import (
    KEYED_BY_USER,
    bundles_prefix,
    erase_job,
    erase_owner,
    user_blob_prefixes,
)
from meshkit.erasure import purge, read_now
from meshkit.rpc import NotFound
from meshkit.topology import DEADLETTER, Buckets

__all__ = ["Forgetter", "Forgotten"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Forgotten:
    """What a deletion removed (zero everywhere when there was nothing left to remove)."""

    jobs: int
    blobs: int
    dead_letters: int


class Forgetter:
    def __init__(
        self, js: JetStreamContext, forgetting: KeyValue, history: JobHistory, blobs: BlobStore
    ) -> None:
        self.js = js
        self.forgetting = forgetting
        self.history = history
        self.jobs = history.jobs
        self.blobs = blobs

    @classmethod
    async def open(cls, js: JetStreamContext, history: JobHistory, blobs: BlobStore) -> Forgetter:
        return cls(js, await js.key_value(Buckets.FORGETTING.name), history, blobs)

    async def forget(self, user: str) -> Forgotten:
        await self.forgetting.put(user, b"")
        jobs = await self._job_ids(user)
        await _each(jobs, self._end)  # a watch of one ends instead of hanging
        await _each(jobs, lambda job_id: purge(self.js, Buckets.JOBS, job_id))
        owners = await self._owners(user)  # read before the bundles' indexes are erased
        blobs = sum(await _each(jobs, lambda job_id: erase_job(self.js, self.blobs, job_id)))
        blobs += sum(await _each(owners, lambda owner: erase_owner(self.js, self.blobs, owner)))
        for prefix in user_blob_prefixes(user):
            blobs += await delete_prefix(self.blobs, prefix)
        await purge(self.js, Buckets.HISTORY, f"{user}.>")
        await _each(KEYED_BY_USER, lambda bucket: purge(self.js, bucket, user))
        letters = await self._erase_dead_letters(user, set(jobs))
        await self._erase_redrives(set(jobs))
        await purge(self.js, Buckets.FORGETTING, user)
        log.info("forgot a user: %d jobs, %d blobs, %d dead letters", len(jobs), blobs, letters)
        return Forgotten(jobs=len(jobs), blobs=blobs, dead_letters=letters)

    async def _end(self, job_id: str) -> None:
        await self.jobs.end(
            job_id,
            job_pb2.JOB_STATE_CANCELLED,
            "the user was forgotten (DeleteUser)",
            code=job_pb2.ERROR_CODE_CANCELLED,
            missing_ok=True,
        )

    async def _job_ids(self, user: str) -> list[str]:
        ids = set(await self.history.job_ids(user))
        active = await read_now(self.js, Buckets.ACTIVE, user)
        if active is not None and active[0]:
            ids.add(active[0].decode())
        return sorted(ids)

    async def _owners(self, user: str) -> list[str]:
        """The user, and the owner of every repository any of their bundles lists."""
        owners = {user}
        async for info in self.blobs.list(bundles_prefix(user)):
            if not info.key.endswith(".index.binpb"):
                continue
            index = bundle_pb2.BundleIndex()
            try:
                index.ParseFromString(await self.blobs.get(info.key))
            except DecodeError:
                continue
            owners.update(entry.repository.split("/")[0] for entry in index.repositories)
        return sorted(owners)

    async def _erase_dead_letters(self, user: str, jobs: set[str]) -> int:
        """Delete the letters of the user's jobs, and any whose task names the user."""
        info = await self.js.stream_info(DEADLETTER)
        erased = 0
        for sequence in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
            try:
                found = await read_letter(self.js, sequence)
            except NotFound:
                continue
            if found.letter.job_id in jobs or _names(found.stream, found.letter.payload, user):
                await self.js.delete_msg(DEADLETTER, sequence)
                await purge(self.js, Buckets.REDRIVES, str(sequence))
                erased += 1
        return erased

    async def _erase_redrives(self, jobs: set[str]) -> None:
        """Remove the redrive records that name one of the user's jobs."""
        stream = f"KV_{Buckets.REDRIVES.name}"
        info = await self.js.stream_info(stream, subjects_filter=f"$KV.{Buckets.REDRIVES.name}.>")
        for subject in info.state.subjects or {}:
            sequence = subject.rsplit(".", 1)[1]
            found = await read_now(self.js, Buckets.REDRIVES, sequence)
            if found is not None and found[0].decode() in jobs:
                await purge(self.js, Buckets.REDRIVES, sequence)


def _names(stream: str, payload: bytes, user: str) -> bool:
    kind = TASK_OF.get(stream)
    if kind is None:
        return False
    try:
        task = kind.FromString(payload)
    except DecodeError:
        return False
    return getattr(task, "user", "") == user


async def _each(items: Sequence[T], call: Callable[[T], Awaitable[R]]) -> list[R]:
    """call on every item, 32 at a time."""
    results: list[R] = []
    for start in range(0, len(items), 32):
        results += await asyncio.gather(*(call(item) for item in items[start : start + 32]))
    return results
