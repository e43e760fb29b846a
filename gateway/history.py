"""A user's job history: which jobs are theirs, newest first, one page at a time.

Job records are keyed by job id alone (every job call names only the id), so a user's jobs
are indexed beside them in cm_history under `<user>.<job id>`, written with the record and
expiring with it. Listing asks the server which subjects of the user's name the bucket's
stream holds (one STREAM.INFO with a subject filter): the cost follows that user's jobs,
never everyone's. (A KV watch would do too, but nats-py can signal "no more entries" before
the entries of a fast consumer arrive, and a page would come back short.) Job ids are ULIDs,
so ordering them orders the jobs by creation. A listed id whose record is gone (expired, or
a refresh that lost its claim and deleted it) is skipped, and the page filled from the next.

Page tokens (AIP-158) are the last job id of the previous page, base64url-encoded: opaque to
clients, and stable while jobs are added (a new job sorts before every token).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re

from contextmesh.job.v1 import job_pb2
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from meshkit.errors import JobNotFoundError
from meshkit.jobs import JobStore
from meshkit.rpc import InvalidArgument
from meshkit.topology import Buckets

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "JobHistory"]

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_JOB_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


class JobHistory:
    """The per-user index of job ids (cm_history) and the pages ListJobs reads from it."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, jobs: JobStore) -> None:
        self.js = js
        self.kv = kv
        self.jobs = jobs

    async def add(self, job: job_pb2.Job) -> None:
        await self.kv.put(_key(job.user, job.id), b"")

    async def remove(self, job: job_pb2.Job) -> None:
        await self.kv.delete(_key(job.user, job.id))

    async def page(
        self, user: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[job_pb2.Job], str]:
        """Up to page_size of the user's jobs older than page_token's, newest first, and the
        token of the page after (empty when there is none)."""
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token) if page_token else None
        ids = sorted(await self.job_ids(user), reverse=True)
        if after is not None:
            ids = [job_id for job_id in ids if job_id < after]
        jobs: list[job_pb2.Job] = []
        for start in range(0, len(ids), size):
            for job in await self._jobs(ids[start : start + size]):
                if len(jobs) == size:
                    return jobs, _encode_token(jobs[-1].id)  # one more exists
                jobs.append(job)
        return jobs, ""

    async def job_ids(self, user: str) -> list[str]:
        """The ids listed under the user's name (a deleted entry's marker included)."""
        subject = f"$KV.{Buckets.HISTORY.name}.{user}.*"
        info = await self.js.stream_info(f"KV_{Buckets.HISTORY.name}", subjects_filter=subject)
        return [name.rsplit(".", 1)[1] for name in info.state.subjects or {}]

    async def _jobs(self, ids: list[str]) -> list[job_pb2.Job]:
        """The jobs of ids, in order; one whose record is gone is left out."""
        records = await asyncio.gather(*(self.jobs.get(i) for i in ids), return_exceptions=True)
        jobs = []
        for found in records:
            if isinstance(found, JobNotFoundError):
                continue
            if isinstance(found, BaseException):
                raise found
            jobs.append(found[0].job)
        return jobs


def _key(user: str, job_id: str) -> str:
    return f"{user}.{job_id}"


def _encode_token(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    try:
        job_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        job_id = ""
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidArgument(
            "page_token: not a token this API returned; pass a response's next_page_token "
            "as it is, or leave it empty for the first page"
        )
    return job_id
