"""A discover task's plan: every repository of the user, with its index, fingerprint and
whether it is stale.

A repository whose fingerprint equals the last bundle's (and that did not fail there) is
unchanged and carries its stored result over; the others, and any the task names to resync,
are stale. The plan is stored create-only under jobs/<job>/plan.json before the job's total
is set, with the job's sync window (syncsvc/window.py). A redelivered discover task reads
that plan back instead of listing again, so indexes, the total and the window never change
within a job, and re-publishing its sync tasks is harmless (same Nats-Msg-Id; the sync
handler also skips a repository whose outcome is already stored).
"""

from __future__ import annotations

import bisect
import json
import logging
from dataclasses import dataclass, field

from contextmesh.bundle.v1 import bundle_pb2
from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.config import SyncSettings
from meshkit.domain.bundle import canonical_json
from meshkit.domain.ids import sync_msg_id
from meshkit.domain.pointers import read_bundle_pointer
from meshkit.errors import BlobExistsError, BlobNotFoundError
from meshkit.worker import PermanentError
from syncsvc.sources.base import RepoListing, Source, SourceError, UserNotFoundError

__all__ = [
    "MAX_REPOSITORIES",
    "Plan",
    "Planner",
    "carried_results",
    "plan_key",
    "read_plan",
    "sync_task",
]

log = logging.getLogger(__name__)

RepoStatus = job_pb2.RepoStatus
MAX_REPOSITORIES = 10_000


def plan_key(job_id: str) -> str:
    return f"jobs/{job_id}/plan.json"


@dataclass(frozen=True)
class Plan:
    """A job's repositories in index order, the bundle it starts from, and its sync window:
    how many of its stale repositories' tasks are out (queued or running) at once."""

    repositories: list[dict]
    base_bundle_hash: str
    window: int
    stale: list[int] = field(init=False)
    """The indexes of the stale repositories, ascending: the order their tasks go out in."""

    def __post_init__(self) -> None:
        stale = [i for i, entry in enumerate(self.repositories) if entry["stale"]]
        object.__setattr__(self, "stale", stale)

    def opening(self) -> list[int]:
        """The stale indexes discovery publishes: the first `window` of them."""
        return self.stale[: self.window]

    def successor(self, index: int) -> int | None:
        """The stale index whose task goes out once the one at `index` is counted: `window`
        places further on, so each of the window's places is a lane of its own and never
        holds more than one uncounted task. None at the end of the lane."""
        place = bisect.bisect_left(self.stale, index)
        if place == len(self.stale) or self.stale[place] != index:
            return None
        after = place + self.window
        return self.stale[after] if after < len(self.stale) else None


def carried_results(plan: Plan) -> list[str]:
    """The earlier results a plan references: an unchanged repository's is its result in
    this job, a stale one's stands in for it if its sync fails."""
    return [p["previous_result_key"] for p in plan.repositories if p["previous_result_key"]]


async def read_plan(blobs: BlobStore, job_id: str) -> Plan:
    """The stored plan of a job; BlobNotFoundError when discovery has not stored one."""
    stored = json.loads(await blobs.get(plan_key(job_id)))
    repositories = stored["repositories"]
    # A plan stored before jobs had a window: its discovery published every task at once.
    window = stored.get("window") or max(1, len(repositories))
    return Plan(repositories, stored["base_bundle_hash"], window)


@dataclass(frozen=True)
class _Base:
    fingerprint: str
    result_key: str
    status: int


class Planner:
    """Plans a discover task's job from the source's listing and the user's last bundle."""

    def __init__(
        self,
        blobs: BlobStore,
        pointers: KeyValue,
        source: Source,
        *,
        window: int = SyncSettings.window,
    ) -> None:
        self.blobs = blobs
        self.pointers = pointers
        self.source = source
        self.window = window

    async def plan(
        self,
        task: sync_tasks.DiscoverTask,
        *,
        replace: bool = False,
        lost: frozenset[str] = frozenset(),
    ) -> Plan:
        """The job's plan: the stored one when an earlier delivery made one, else a new one,
        stored create-only. UserNotFoundError passes through; a source that refuses for good
        is a PermanentError. `replace` plans again before the job's total is set, with the
        repositories whose earlier result is in `lost` (swept by retention) stale and none
        carried over."""
        key = plan_key(task.meta.job_id)
        if replace:
            await self.blobs.delete(key)
        else:
            try:
                return await read_plan(self.blobs, task.meta.job_id)
            except BlobNotFoundError:
                pass
        try:
            listing = await self.source.list_repositories(task.user)
        except UserNotFoundError:
            raise  # the handler ends the job without parking the task
        except SourceError as exc:
            if not exc.transient:
                raise PermanentError(
                    f"cannot list repositories of {task.user!r}: {exc}",
                    code=job_pb2.ERROR_CODE_SOURCE_REFUSED,
                ) from None
            raise
        if len(listing) > MAX_REPOSITORIES:
            raise PermanentError(
                f"{task.user!r} has {len(listing)} repositories; the limit is {MAX_REPOSITORIES}",
                code=job_pb2.ERROR_CODE_SOURCE_REFUSED,
            )
        base, base_hash = await self._base(task.user)
        resync = {name.lower() for name in task.resync}
        base = {name: b for name, b in base.items() if b.result_key not in lost}
        plan = [
            _plan_entry(
                repo,
                base.get(repo.full_name.lower()),
                task.force or repo.full_name.lower() in resync,
            )
            for repo in sorted(listing, key=lambda r: r.full_name.lower())
        ]
        document = {"base_bundle_hash": base_hash, "repositories": plan, "window": self.window}
        try:
            await self.blobs.create(key, canonical_json(document))
        except BlobExistsError:  # a concurrent delivery planned first: use its plan
            return await read_plan(self.blobs, task.meta.job_id)
        return Plan(plan, base_hash, self.window)

    async def _base(self, user: str) -> tuple[dict[str, _Base], str]:
        """The fingerprints of the user's current bundle, from its small index blob."""
        pointer = await read_bundle_pointer(self.pointers, user)
        if pointer is None:
            return {}, ""
        index = bundle_pb2.BundleIndex()
        try:
            index.ParseFromString(await self.blobs.get(pointer.index_key))
        except BlobNotFoundError:
            log.warning(
                "bundle index %s is missing; treating every repository as stale", pointer.index_key
            )
            return {}, ""
        return (
            {
                r.repository.lower(): _Base(r.fingerprint, r.result_key, r.status)
                for r in index.repositories
            },
            pointer.bundle.content_hash,
        )


def sync_task(job_id: str, user: str, plan: Plan, index: int) -> sync_tasks.SyncRepoTask:
    """The sync task of the plan's stale repository at `index`."""
    entry = plan.repositories[index]
    meta = entry["metadata"]
    sync = sync_tasks.SyncRepoTask(
        meta=task_pb2.TaskMeta(job_id=job_id, task_id=sync_msg_id(job_id, index)),
        user=user,
        repository=entry["repository"],
        index=index,
        fingerprint=entry["fingerprint"],
        default_branch=entry["default_branch"],
        previous_result_key=entry["previous_result_key"],
        metadata=sync_tasks.RepoMetadata(
            description=meta["description"] or "",
            language=meta["language"] or "",
            topics=meta["topics"],
            homepage=meta["homepage"] or "",
            url=meta["url"] or "",
            private=meta["private"],
        ),
    )
    sync.meta.enqueue_time.GetCurrentTime()
    return sync


def _plan_entry(repo: RepoListing, base: _Base | None, force: bool) -> dict:
    """One repository of the plan; `force` makes it stale whatever its fingerprint says."""
    unchanged = (
        not force
        and base is not None
        and base.fingerprint == repo.fingerprint
        and bool(base.result_key)
        and base.status != RepoStatus.REPO_STATUS_FAILED
    )
    return {
        "repository": repo.full_name,
        "fingerprint": repo.fingerprint,
        "default_branch": repo.default_branch,
        "stale": not unchanged,
        "previous_result_key": base.result_key if base else "",
        "metadata": repo.metadata.to_json(),
    }
