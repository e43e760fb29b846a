"""Choose a blob store by URL, so that moving between clouds is configuration, not code.

    file:///var/lib/contextmesh/blobs   FilesystemBlobStore
"""

from __future__ import annotations

import urllib.parse

from meshkit.blob.base import BlobStore
from meshkit.errors import ConfigError

__all__ = ["open_blob_store"]


def open_blob_store(url: str, *, variable: str = "CONTEXTMESH_BLOB_URL") -> BlobStore:
    """Open the store a URL names; ConfigError (naming `variable`) for a URL it cannot use."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        from meshkit.blob.fs import FilesystemBlobStore

        if not parsed.path:
            raise ConfigError(variable, f"{url!r} has no path; use file:///absolute/path")
        return FilesystemBlobStore(urllib.parse.unquote(parsed.path))
    raise ConfigError(variable, f"unsupported blob store URL {url!r}; use file:///path")
