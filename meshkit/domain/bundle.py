"""The bundle: the merged context of all of a user's repositories, as a versioned document.

Two JSON documents, both written in canonical form (sorted keys, no insignificant spaces,
UTF-8) so that the same inputs give byte-identical output and the same content hash.

A **repository result** (`contextmesh.repo/v1`), written by syncsvc once per fetched state of
a repository, under `repos/<owner>/<name>/<sha256>.json`, and a **bundle**
(`contextmesh.bundle/v1`), written by mergesvc under `bundles/<user>/<content_hash>.json`,
which holds every repository result of the job sorted by repository. Their shapes are typed
in meshkit.domain.documents, the only code that knows their JSON.

The content hash is the SHA-256 of the canonical bytes. It depends on content only, not on
which job produced it: a refresh that changes nothing yields the same bundle and hash (and
training skips it). How each repository fared in a particular job (synced, unchanged,
failed) lives in that job's BundleIndex, `bundles/<user>/<content_hash>/<job_id>.index.binpb`.
A failed repository keeps its last good result when it had one, with `sync_error` saying
why it is not fresh; otherwise it appears with null context and readme.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = [
    "BUNDLE_FORMAT",
    "REPO_FORMAT",
    "bundle_index_key",
    "bundle_key",
    "canonical_json",
    "content_hash",
    "repo_result_key",
]

REPO_FORMAT = "contextmesh.repo/v1"
BUNDLE_FORMAT = "contextmesh.bundle/v1"


def canonical_json(document: Any) -> bytes:
    """The one byte form of a JSON document: sorted keys, compact, UTF-8."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def content_hash(data: bytes) -> str:
    """SHA-256 of data, in lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def repo_result_key(repository: str, digest: str) -> str:
    """Blob key of a repository result; repository is 'owner/name', already validated."""
    return f"repos/{repository}/{digest}.json"


def bundle_key(user: str, digest: str) -> str:
    """Blob key of a bundle document."""
    return f"bundles/{user}/{digest}.json"


def bundle_index_key(user: str, digest: str, job_id: str) -> str:
    """Blob key of the BundleIndex (protobuf) of the job that produced or confirmed a bundle."""
    return f"bundles/{user}/{digest}/{job_id}.index.binpb"
