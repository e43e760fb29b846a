"""Choose a blob store by URL, so that moving between clouds is configuration, not code.

    file:///var/lib/contextmesh/blobs   FilesystemBlobStore
    azure://container[/prefix]          AzureBlobStore  (AZURE_STORAGE_CONNECTION_STRING, or
                                                         AZURE_STORAGE_ACCOUNT_URL + identity)
    gs://bucket[/prefix]                GCSBlobStore    (application default credentials, or
                                                         STORAGE_EMULATOR_HOST)
    s3://bucket[/prefix]                S3BlobStore     (AWS environment/profile/role;
                                                         AWS_ENDPOINT_URL_S3 for other servers)

Credentials never go in the URL: it is logged, and a URL with a user, password, query or
fragment is refused. Each cloud SDK is imported only when its scheme is used.
Every store comes wrapped in a MeasuredBlobStore, which exports its bytes and latencies.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from meshkit.blob.base import BlobStore, validate_key
from meshkit.blob.measured import MeasuredBlobStore
from meshkit.errors import ConfigError, InvalidBlobKeyError

__all__ = ["open_blob_store"]

_SCHEMES = "file:///path, azure://container[/prefix], gs://bucket[/prefix], s3://bucket[/prefix]"
# Bucket and container naming rules of each provider (the common, non-dotted forms for GCS).
_BUCKET_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "azure": (
        re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"),
        "3-63 lowercase letters, digits and single hyphens",
    ),
    "gs": (
        re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$"),
        "3-63 lowercase letters, digits, dots, hyphens and underscores",
    ),
    "s3": (
        re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
        "3-63 lowercase letters, digits, dots and hyphens",
    ),
}


def open_blob_store(url: str, *, variable: str = "CONTEXTMESH_BLOB_URL") -> BlobStore:
    """Open the store a URL names; ConfigError (naming `variable`) for a URL it cannot use."""
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError:
        raise ConfigError(variable, f"not a URL; use {_SCHEMES}") from None
    shown = _redacted(parsed)
    if parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise ConfigError(
            variable,
            f"{shown} carries a user, password, query or fragment; credentials come from "
            "the provider's usual environment, never the URL",
        )
    if parsed.scheme == "file":
        from meshkit.blob.fs import FilesystemBlobStore

        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise ConfigError(variable, f"{shown} has no local path; use file:///absolute/path")
        return MeasuredBlobStore(FilesystemBlobStore(urllib.parse.unquote(parsed.path)), "file")
    opener = _OPENERS.get(parsed.scheme)
    if opener is None:
        raise ConfigError(variable, f"unsupported blob store URL {shown}; use {_SCHEMES}")
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    pattern, rule = _BUCKET_RULES[parsed.scheme]
    if not pattern.match(bucket):
        raise ConfigError(variable, f"{shown}: bucket or container must be {rule}")
    if prefix:
        try:
            validate_key(prefix)
        except InvalidBlobKeyError as exc:
            raise ConfigError(variable, f"{shown}: bad prefix: {exc}") from None
    return MeasuredBlobStore(opener(bucket, prefix), _BACKENDS[parsed.scheme])


def _redacted(parsed: urllib.parse.SplitResult) -> str:
    # Show where the URL points, never what it might carry.
    host = parsed.netloc.rpartition("@")[2]
    return repr(f"{parsed.scheme}://{host}{parsed.path}" if parsed.scheme else parsed.path)


def _open_azure(container: str, prefix: str) -> BlobStore:
    from meshkit.blob.azure import AzureBlobStore

    return AzureBlobStore.from_env(container, prefix)


def _open_gcs(bucket: str, prefix: str) -> BlobStore:
    from meshkit.blob.gcs import GCSBlobStore

    return GCSBlobStore.from_env(bucket, prefix)


def _open_s3(bucket: str, prefix: str) -> BlobStore:
    from meshkit.blob.s3 import S3BlobStore

    return S3BlobStore.from_env(bucket, prefix)


# The `backend` label of each scheme's metrics.
_BACKENDS = {"azure": "azure", "gs": "gcs", "s3": "s3"}

_OPENERS: dict[str, Callable[[str, str], Any]] = {
    "azure": _open_azure,
    "gs": _open_gcs,
    "s3": _open_s3,
}
