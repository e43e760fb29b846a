"""Map the interface's keys onto a bucket's object names under an optional prefix.

A store opened on `s3://bucket/tenant-a` keeps its objects under `tenant-a/`; callers see and
pass keys relative to that prefix, and list() shows only names that are valid keys, so that a
console's `folder/` markers or foreign names never reach the caller.
"""

from __future__ import annotations

import re

from meshkit.blob.base import MAX_KEY_LENGTH, validate_key
from meshkit.errors import InvalidBlobKeyError

__all__ = ["KeySpace", "validate_prefix"]

_PARTIAL_SEGMENT = re.compile(r"^[A-Za-z0-9._=+-]*$")


def validate_prefix(prefix: str) -> str:
    """Return prefix if it could start a valid key ("", "a", "a/", "a/b."), else raise
    InvalidBlobKeyError: a prefix no key can have would only ever list nothing, or worse."""
    if not prefix:
        return prefix
    *complete, partial = prefix.split("/")
    try:
        if complete:
            validate_key("/".join(complete))
        elif not prefix[:1].isalnum():
            raise InvalidBlobKeyError(f"{prefix!r} does not start with a letter or digit")
        if len(prefix) > MAX_KEY_LENGTH or not _PARTIAL_SEGMENT.match(partial):
            raise InvalidBlobKeyError(f"{partial!r} is not the start of a key segment")
    except InvalidBlobKeyError as exc:
        raise InvalidBlobKeyError(
            f"list prefix {prefix!r} cannot start a blob key: {exc}"
        ) from None
    return prefix


class KeySpace:
    """Keys relative to a root prefix inside one bucket or container."""

    def __init__(self, root: str = "") -> None:
        root = root.strip("/")
        self.root = validate_key(root) + "/" if root else ""

    def name(self, key: str) -> str:
        """The object name for key, after checking that key is valid."""
        return self.root + validate_key(key)

    def list_prefix(self, prefix: str) -> str:
        """The object-name prefix to list for a key prefix."""
        return self.root + validate_prefix(prefix)

    def key(self, name: str) -> str | None:
        """The key for an object name, or None for a name that is not a key of this store."""
        if not name.startswith(self.root):
            return None
        key = name[len(self.root) :]
        try:
            return validate_key(key)
        except InvalidBlobKeyError:
            return None
