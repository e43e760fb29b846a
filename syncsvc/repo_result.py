"""Build a repository result (`contextmesh.repo/v1`, meshkit.domain.documents) from what a
source listed and fetched.

The result is a pure function of its inputs: no clock, no host, no order that the inputs do
not fix. The same listing and files give the same document, so the same canonical bytes and the
same content-addressed blob key, however often a task is redelivered (guarantee 2 in
docs/architecture.md).

It always encodes: every string in it is made encodable (meshkit.text) with a warning, and
a document that still would not encode raises PermanentError, which fails that repository
at once with the reason instead of retrying a task that cannot succeed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from meshkit.domain.bundle import canonical_json
from meshkit.domain.documents import (
    FetchRecord,
    Readme,
    RepositoryContext,
    RepositoryMetadata,
    RepositoryResult,
)
from meshkit.text import REPLACEMENT, encodable, encodable_json
from meshkit.worker import PermanentError
from syncsvc.repo_context import parse_repo_context
from syncsvc.sources.base import FetchedFile, FetchedRepo, RepoListing

__all__ = ["FETCH_STATUSES", "decode_text", "ensure_encodable", "normalize_repository"]

FETCH_STATUSES = ("ok", "missing", "too_large", "invalid", "not_modified")
# Statuses whose FetchedFile carries the body (a 304 carries the cached one).
_HAS_BODY = ("ok", "not_modified")


def normalize_repository(
    listing: RepoListing, fetched: FetchedRepo, *, max_file_bytes: int
) -> RepositoryResult:
    """The repository result for listing and its fetched files."""
    result = _Result(max_file_bytes)
    result.warn_all(fetched.warnings)

    context: RepositoryContext | None = None
    body = result.body(fetched.context)
    if body is not None:
        parsed = parse_repo_context(body, max_bytes=max_file_bytes)
        result.warn_all(parsed.warnings)
        if parsed.context is None:
            result.fetch[fetched.context.path]["status"] = "invalid"
        else:
            context = RepositoryContext.from_json(parsed.context)

    readme: Readme | None = None
    body = result.body(fetched.readme)
    if body is not None:
        readme = Readme(fetched.readme.path, result.text(fetched.readme.path, body))

    files: dict[str, str] = {}
    for extra in fetched.extra:
        body = result.body(extra)
        if body is not None and extra.path not in files:
            files[extra.path] = result.text(extra.path, body)

    metadata = listing.metadata
    result.warn_replaced(metadata)

    document = RepositoryResult(
        repository=listing.full_name,
        fingerprint=listing.fingerprint,
        default_branch=listing.default_branch,
        metadata=metadata,
        context=context,
        readme=readme,
        files=files,
        fetch={path: FetchRecord(f["status"], f["bytes"]) for path, f in result.fetch.items()},
        warnings=tuple(result.warnings),
    )
    # The one net under everything a source handed over (file paths, its warnings): the
    # reader and the listing already made their own text encodable.
    fixed, replaced = encodable_json(document.to_json())
    if replaced:
        document = RepositoryResult.from_json(fixed)
        document = replace(
            document,
            warnings=(
                *document.warnings,
                f"{replaced} texts from the source (file names, paths, messages) could not be "
                "encoded and had characters replaced with U+FFFD",
            ),
        )
    ensure_encodable(document)
    return document


def ensure_encodable(document: RepositoryResult) -> bytes:
    """The canonical bytes of a repository result; PermanentError, naming the repository,
    when it cannot have any (the repository then fails at once with that reason)."""
    try:
        return canonical_json(document.to_json())
    except (ValueError, TypeError, RecursionError) as exc:
        reason = encodable(f"{type(exc).__name__}: {exc}")[:300]
        raise PermanentError(
            f"{document.repository}: its result cannot be stored as JSON ({reason})"
        ) from None


def decode_text(data: bytes) -> tuple[str, bool]:
    """data as text: UTF-8 (a leading BOM dropped) with undecodable bytes replaced, and line
    endings made '\\n'. The flag says whether anything had to be replaced."""
    try:
        text, clean = data.decode("utf-8-sig"), True
    except UnicodeDecodeError:
        text, clean = data.decode("utf-8-sig", errors="replace"), False
    return text.replace("\r\n", "\n").replace("\r", "\n"), clean


class _Result:
    """The fetch table and warnings of one result, filled file by file."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.fetch: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def warn_all(self, messages: tuple[str, ...]) -> None:
        for message in messages:
            self.warn(message)

    def warn_replaced(self, metadata: RepositoryMetadata) -> None:
        """A warning per listing field that shows U+FFFD: the source replaced text there
        that could not be encoded (or received it already replaced)."""
        for name, value in metadata.to_json().items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and REPLACEMENT in v for v in values):
                self.warn(
                    f"metadata.{name}: the listing held text that could not be read or "
                    "encoded; it shows U+FFFD"
                )

    def body(self, file: FetchedFile) -> bytes | None:
        """Record file in the fetch table; its bytes when they are there to use."""
        if file.path in self.fetch:  # the same path fetched twice (a README also configured
            return None  # as an extra file): the first one counts
        status, data = file.status, file.data
        size = len(data) if data is not None else file.size
        if status not in FETCH_STATUSES:
            self.warn(f"{file.path}: the source reported an unknown status {status!r}")
            status, data = "invalid", None
        elif status in _HAS_BODY and data is None:
            self.warn(f"{file.path}: the source reported it {status} but returned no content")
            status = "invalid"
        elif status in _HAS_BODY and data is not None and len(data) > self.max_file_bytes:
            status, data = "too_large", None
        if status == "too_large":
            self.warn(
                f"{file.path} is too large: {size} bytes, the limit is {self.max_file_bytes}; "
                "skipped"
            )
        self.fetch[file.path] = {"status": status, "bytes": size}
        return data if status in _HAS_BODY else None

    def text(self, path: str, data: bytes) -> str:
        text, clean = decode_text(data)
        if not clean:
            self.warn(f"{path} is not valid UTF-8; undecodable bytes were replaced")
        return text
