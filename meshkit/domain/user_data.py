"""Where a user's data lives: every KV key and blob prefix that names them or their jobs.

The services write these; DeleteUser (gateway/forget.py) erases them all, and a writer that
finds its job forgotten after writing takes back its part (docs/architecture.md,
"Forgetting a user"). Keeping the layout in one place keeps the two in step.

    by user    cm_active, cm_bundles, cm_models, cm_schedules, cm_callbacks, cm_pending
               under <user>; cm_history under <user>.<job>; blobs under bundles/<user>/
               and models/<user>/
    by job     cm_jobs under <job>; cm_outcomes under <job>.<index>; blobs under jobs/<job>/
    by owner   (GitHub's, lower-cased: the user and the owners of the repositories in their
               bundles) cm_http_cache under <owner>.<sha256 of URL>; blobs under
               http-cache/<owner>/ and repos/<Owner>/ (GitHub's spelling)
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from nats.js import JetStreamContext

from meshkit.blob import BlobStore
from meshkit.blob.base import delete_prefix
from meshkit.erasure import purge
from meshkit.topology import Bucket, Buckets

__all__ = [
    "KEYED_BY_USER",
    "bundles_prefix",
    "erase_job",
    "erase_owner",
    "http_cache_body_key",
    "http_cache_key",
    "http_cache_owner",
    "http_cache_prefix",
    "job_blob_prefix",
    "user_blob_prefixes",
]

KEYED_BY_USER: tuple[Bucket, ...] = (
    Buckets.ACTIVE,
    Buckets.BUNDLES,
    Buckets.MODELS,
    Buckets.SCHEDULES,
    Buckets.CALLBACKS,
    Buckets.PENDING,
)
"""The buckets whose key is the user's name itself."""

_NO_OWNER = "_"


def http_cache_owner(url: str) -> str:
    """The lower-cased owner a GitHub API URL is about (`/users/<owner>…`,
    `/repos/<owner>/…`); "_" for a URL about no one."""
    segments = urlsplit(url).path.split("/")
    for i, segment in enumerate(segments[:-1]):
        if segment in ("users", "repos") and segments[i + 1]:
            return segments[i + 1].lower()
    return _NO_OWNER


def http_cache_key(url: str) -> str:
    """The cm_http_cache key of a URL: its owner, then its SHA-256 (no URL becomes a key)."""
    return f"{http_cache_owner(url)}.{hashlib.sha256(url.encode()).hexdigest()}"


def http_cache_prefix(owner: str) -> str:
    """Where the cached response bodies about owner lie."""
    return f"http-cache/{owner.lower()}/"


def http_cache_body_key(url: str, body: bytes) -> str:
    """A cached body's blob key: content-addressed within its owner's prefix."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{http_cache_prefix(http_cache_owner(url))}{digest[:2]}/{digest}"


def job_blob_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def bundles_prefix(user: str) -> str:
    """Where the user's bundles and their indexes lie."""
    return f"bundles/{user}/"


def user_blob_prefixes(user: str) -> tuple[str, ...]:
    """The blob prefixes under the user's own name: bundles and models."""
    return (bundles_prefix(user), f"models/{user}/")


async def erase_job(js: JetStreamContext, blobs: BlobStore, job_id: str) -> int:
    """Erase what a job wrote under its own id (outcomes, plan); its record is the caller's.
    Returns the blobs deleted."""
    await purge(js, Buckets.OUTCOMES, f"{job_id}.>")
    return await delete_prefix(blobs, job_blob_prefix(job_id))


async def erase_owner(js: JetStreamContext, blobs: BlobStore, owner: str) -> int:
    """Erase what was fetched about a GitHub owner: cached responses and repository
    results. Returns the blobs deleted."""
    await purge(js, Buckets.HTTP_CACHE, f"{owner.lower()}.>")
    deleted = await delete_prefix(blobs, http_cache_prefix(owner))
    return deleted + await delete_prefix(blobs, f"repos/{owner}/")
