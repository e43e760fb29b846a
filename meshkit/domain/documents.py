"""The repository result and the bundle as typed documents: the one place their JSON is known.

A **repository result** (`contextmesh.repo/v1`), written by syncsvc once per fetched state of
a repository, under `repos/<owner>/<name>/<sha256>.json`:

    {
      "format": "contextmesh.repo/v1",
      "repository": "owner/name",
      "fingerprint": "2026-11-01T10:00:00Z",      # what discovery saw (pushed_at, HEAD, hash)
      "default_branch": "main",
      "metadata": {"description": str|null, "language": str|null, "topics": [str],
                   "homepage": str|null, "url": str|null, "private": bool},
      "context": {                                  # null when there is no .repo-context.json
        "name": str|null, "description": str|null, "type": str|null, "scope": str|null,
        "tech": [str], "skills": [str], "topics": [str],
        "components": [{"name": str, "description": str}],
        "faq": [{"question": str, "answer": str}],
        "raw": {...}                                # the whole parsed file, unknown parts kept
      },
      "readme": {"path": "README.md", "text": str} | null,
      "files": {"ARCHITECTURE.md": str, ...},      # the configured extra files that exist
      "fetch": {"<path>": {"status": "ok|missing|too_large|invalid|not_modified",
                           "bytes": int}},
      "warnings": [str]
    }

A **bundle** (`contextmesh.bundle/v1`), written by mergesvc under
`bundles/<user>/<content_hash>.json`, holds every repository result of the job sorted by
repository, each with the job-independent reason it is not fresh:

    {"format": "contextmesh.bundle/v1", "user": "demo",
     "repositories": [{...repository result..., "sync_error": str|null}]}

A repository that failed before it ever had a result appears as a placeholder: no "format"
or "default_branch", "metadata" {}, null context and readme, no files or fetches, and the
warnings of its failed sync.

Frozen dataclasses rather than TypedDicts: a TypedDict only promises that json.loads returned
the right shape, so every reader would check every value again (as passages.py once did).
Here `from_json` checks once, tolerantly, and readers get attributes they can trust.

Both documents are content-addressed, so `to_json` must give the very dict the writer gave:
`X.from_json(doc).to_json() == doc` for every document syncsvc and mergesvc write, and the
canonical bytes (meshkit.domain.bundle.canonical_json), hence the hash, stay the same. Stored
data may be older or partial: a missing or mistyped part reads as empty (a wrong-typed list
item is dropped) instead of failing, and is written back in the full shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshkit.domain.bundle import BUNDLE_FORMAT, REPO_FORMAT

__all__ = [
    "Bundle",
    "BundleRepository",
    "Component",
    "FaqEntry",
    "FetchRecord",
    "Readme",
    "RepositoryContext",
    "RepositoryMetadata",
    "RepositoryResult",
]


@dataclass(frozen=True, kw_only=True)
class RepositoryMetadata:
    """What the source's listing says about a repository."""

    description: str | None = None
    language: str | None = None
    topics: tuple[str, ...] = ()
    homepage: str | None = None
    url: str | None = None
    private: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "language": self.language,
            "topics": list(self.topics),
            "homepage": self.homepage,
            "url": self.url,
            "private": self.private,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RepositoryMetadata:
        return cls(
            description=_str_or_none(doc.get("description")),
            language=_str_or_none(doc.get("language")),
            topics=_strs(doc.get("topics")),
            homepage=_str_or_none(doc.get("homepage")),
            url=_str_or_none(doc.get("url")),
            private=doc.get("private") is True,
        )


@dataclass(frozen=True)
class Component:
    name: str
    description: str


@dataclass(frozen=True)
class FaqEntry:
    question: str
    answer: str


@dataclass(frozen=True, kw_only=True)
class RepositoryContext:
    """The normalized `.repo-context.json` (syncsvc.repo_context reads the file)."""

    name: str | None = None
    description: str | None = None
    type: str | None = None
    scope: str | None = None
    tech: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    faq: tuple[FaqEntry, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The whole parsed file, what the reader did not understand included."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "type": self.type,
            "scope": self.scope,
            "tech": list(self.tech),
            "skills": list(self.skills),
            "topics": list(self.topics),
            "components": [{"name": c.name, "description": c.description} for c in self.components],
            "faq": [{"question": f.question, "answer": f.answer} for f in self.faq],
            "raw": dict(self.raw),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RepositoryContext:
        return cls(
            name=_str_or_none(doc.get("name")),
            description=_str_or_none(doc.get("description")),
            type=_str_or_none(doc.get("type")),
            scope=_str_or_none(doc.get("scope")),
            tech=_strs(doc.get("tech")),
            skills=_strs(doc.get("skills")),
            topics=_strs(doc.get("topics")),
            components=tuple(
                Component(a, b) for a, b in _pairs(doc.get("components"), "name", "description")
            ),
            faq=tuple(FaqEntry(a, b) for a, b in _pairs(doc.get("faq"), "question", "answer")),
            raw=_mapping(doc.get("raw")),
        )


@dataclass(frozen=True)
class Readme:
    path: str
    text: str


@dataclass(frozen=True)
class FetchRecord:
    """How fetching one file went: its status (syncsvc.repo_result.FETCH_STATUSES) and size."""

    status: str
    bytes: int


@dataclass(frozen=True, kw_only=True)
class RepositoryResult:
    """One repository's stored state; a placeholder (metadata None) when it never had one."""

    repository: str
    """owner/name."""
    fingerprint: str
    default_branch: str | None = None
    """None only in a placeholder."""
    metadata: RepositoryMetadata | None = None
    """None marks a placeholder: the bundle's stand-in for a repository with no result (its
    JSON has no "format")."""
    context: RepositoryContext | None = None
    readme: Readme | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    """The configured extra files that exist, by path."""
    fetch: Mapping[str, FetchRecord] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @classmethod
    def placeholder(
        cls, repository: str, fingerprint: str, warnings: tuple[str, ...] = ()
    ) -> RepositoryResult:
        """A repository the bundle lists without a result (it failed before its first sync)."""
        return cls(repository=repository, fingerprint=fingerprint, warnings=warnings)

    @property
    def is_placeholder(self) -> bool:
        return self.metadata is None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.metadata is not None:
            doc["format"] = REPO_FORMAT
            doc["default_branch"] = self.default_branch
        doc |= {
            "repository": self.repository,
            "fingerprint": self.fingerprint,
            "metadata": self.metadata.to_json() if self.metadata is not None else {},
            "context": self.context.to_json() if self.context is not None else None,
            "readme": (
                {"path": self.readme.path, "text": self.readme.text}
                if self.readme is not None
                else None
            ),
            "files": dict(self.files),
            "fetch": {
                path: {"status": r.status, "bytes": r.bytes} for path, r in self.fetch.items()
            },
            "warnings": list(self.warnings),
        }
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RepositoryResult:
        """Read a stored result (or a bundle's entry, whose sync_error it ignores); one
        without a "format" is a placeholder."""
        context = doc.get("context")
        readme = _mapping(doc.get("readme"))
        text = readme.get("text")
        return cls(
            repository=_str_or_none(doc.get("repository")) or "unknown/unknown",
            fingerprint=_str_or_none(doc.get("fingerprint")) or "",
            default_branch=_str_or_none(doc.get("default_branch")),
            metadata=(
                RepositoryMetadata.from_json(_mapping(doc.get("metadata")))
                if "format" in doc
                else None
            ),
            context=RepositoryContext.from_json(context) if isinstance(context, Mapping) else None,
            readme=(
                Readme(str(readme.get("path") or "README"), text) if isinstance(text, str) else None
            ),
            files={
                str(path): body
                for path, body in _mapping(doc.get("files")).items()
                if isinstance(body, str)
            },
            fetch={
                str(path): FetchRecord(str(record.get("status")), _int(record.get("bytes")))
                for path, record in _mapping(doc.get("fetch")).items()
                if isinstance(record, Mapping)
            },
            warnings=_strs(doc.get("warnings")),
        )


@dataclass(frozen=True)
class BundleRepository:
    """A repository of a bundle: its result and why it is not fresh, if it is not."""

    result: RepositoryResult
    sync_error: str | None = None
    """Why the last sync failed: the result is the last good one, or a placeholder."""

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "sync_error": self.sync_error}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> BundleRepository:
        return cls(RepositoryResult.from_json(doc), _str_or_none(doc.get("sync_error")))


@dataclass(frozen=True)
class Bundle:
    """A user's merged context: one entry per repository, sorted by name ignoring case."""

    user: str
    repositories: tuple[BundleRepository, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "user": self.user,
            "repositories": [r.to_json() for r in self.repositories],
        }

    @classmethod
    def from_json(cls, doc: Any) -> Bundle:
        """Read a stored bundle; ValueError when doc is not a bundle document at all."""
        if not isinstance(doc, Mapping) or doc.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"not a {BUNDLE_FORMAT} document")
        return cls(
            user=str(doc.get("user") or ""),
            repositories=tuple(
                BundleRepository.from_json(entry)
                for entry in _list(doc.get("repositories"))
                if isinstance(entry, Mapping)
            ),
        )


# Tolerant reads: a value of the wrong type reads as absent.


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(item for item in _list(value) if isinstance(item, str))


def _pairs(value: Any, first: str, second: str) -> list[tuple[str, str]]:
    return [
        (item[first], item[second])
        for item in _list(value)
        if isinstance(item, Mapping)
        and isinstance(item.get(first), str)
        and isinstance(item.get(second), str)
    ]
