"""Build a store of any backend from a plain description, in the test process or a child.

The contract tests and the killed-writer child process both build stores here, so that the
child writes with exactly the settings (small parts, small pages) the parent checks against.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from meshkit.blob import BlobStore, FilesystemBlobStore
from meshkit.retry import BLOB_CALL

__all__ = ["BUCKET", "CLOUD", "OPTIONS", "StoreSpec", "build_store"]

BUCKET = "contract"
CLOUD = ("azure", "gcs", "s3")
PAGE_SIZE = 7  # small, so that a listing of a few dozen keys crosses several pages

# Small parts and windows, so that a few MiB already exercise the multi-request paths.
OPTIONS: dict[str, dict[str, Any]] = {
    "azure": {"block_size": 1024 * 1024, "read_window": 1024 * 1024, "page_size": PAGE_SIZE},
    "gcs": {"chunk_size": 1024 * 1024, "read_window": 1024 * 1024, "page_size": PAGE_SIZE},
    "s3": {"part_size": 5 * 1024 * 1024, "page_size": PAGE_SIZE},
}
# Part size above which every backend (S3's minimum part is 5 MiB) uses its multi-request path.
MULTIPART_ABOVE = 5 * 1024 * 1024


@dataclass(frozen=True)
class StoreSpec:
    """What store to build: fs with a root, or a cloud backend with bucket and prefix."""

    backend: str
    root: str = ""
    bucket: str = BUCKET
    prefix: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StoreSpec:
        return cls(**json.loads(text))


def build_store(spec: StoreSpec) -> BlobStore:
    """The store spec describes; cloud stores read credentials from os.environ."""
    retry = dataclasses.replace(
        BLOB_CALL, attempts=3, base_delay_s=0.1, max_delay_s=0.5, attempt_timeout_s=60.0
    )
    if spec.backend == "fs":
        return FilesystemBlobStore(spec.root)
    options = {**OPTIONS[spec.backend], "retry": retry}
    if spec.backend == "azure":
        from meshkit.blob.azure import AzureBlobStore

        return AzureBlobStore.from_env(spec.bucket, spec.prefix, **options)
    if spec.backend == "gcs":
        from meshkit.blob.gcs import GCSBlobStore

        return GCSBlobStore.from_env(spec.bucket, spec.prefix, **options)
    from meshkit.blob.s3 import S3BlobStore

    return S3BlobStore.from_env(spec.bucket, spec.prefix, **options)
