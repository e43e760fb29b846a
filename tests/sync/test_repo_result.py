"""The repository result document built from a listing and fetched files."""

from __future__ import annotations

import json
from typing import Any

from meshkit.domain.bundle import REPO_FORMAT, canonical_json, content_hash
from meshkit.domain.documents import RepositoryMetadata
from syncsvc.repo_result import decode_text, normalize_repository
from syncsvc.sources.base import FetchedFile, FetchedRepo, RepoListing

LIMIT = 4096
LISTING = RepoListing(
    full_name="demo/tidepool",
    fingerprint="2026-11-01T10:00:00Z",
    default_branch="trunk",
    metadata=RepositoryMetadata(
        description="Tide predictions",
        language="Python",
        topics=("tides", "oceanography"),
        homepage="https://tidepool.example",
        url="https://github.com/demo/tidepool",
    ),
)
CONTEXT = json.dumps(
    {
        "project_identity": {"name": "tidepool", "description": "Predicts tides."},
        "tech_stack": {"primary": ["Python"]},
        "skill_manifest": {"technical": ["Harmonic analysis"]},
        "faq": [{"question": "Which stations?", "answer": "Any with a year of data."}],
    }
).encode()


def ok(path: str, data: bytes) -> FetchedFile:
    return FetchedFile(path=path, status="ok", data=data, size=len(data))


def missing(path: str) -> FetchedFile:
    return FetchedFile(path=path, status="missing")


def build(fetched: FetchedRepo) -> dict[str, Any]:
    """The result as stored."""
    return normalize_repository(LISTING, fetched, max_file_bytes=LIMIT).to_json()


def test_the_whole_document() -> None:
    fetched = FetchedRepo(
        context=ok(".repo-context.json", CONTEXT),
        readme=ok("README.md", b"# tidepool\r\n\r\nPredicts tides.\r\n"),
        extra=(ok("ARCHITECTURE.md", b"# Architecture\n"), missing("SKILLS-INDEX.md")),
    )
    assert build(fetched) == {
        "format": REPO_FORMAT,
        "repository": "demo/tidepool",
        "fingerprint": "2026-11-01T10:00:00Z",
        "default_branch": "trunk",
        "metadata": {
            "description": "Tide predictions",
            "language": "Python",
            "topics": ["tides", "oceanography"],
            "homepage": "https://tidepool.example",
            "url": "https://github.com/demo/tidepool",
            "private": False,
        },
        "context": {
            "name": "tidepool",
            "description": "Predicts tides.",
            "type": None,
            "scope": None,
            "tech": ["Python"],
            "skills": ["Harmonic analysis"],
            "topics": [],
            "components": [],
            "faq": [{"question": "Which stations?", "answer": "Any with a year of data."}],
            "raw": json.loads(CONTEXT),
        },
        "readme": {"path": "README.md", "text": "# tidepool\n\nPredicts tides.\n"},
        "files": {"ARCHITECTURE.md": "# Architecture\n"},
        "fetch": {
            ".repo-context.json": {"status": "ok", "bytes": len(CONTEXT)},
            "README.md": {"status": "ok", "bytes": 31},
            "ARCHITECTURE.md": {"status": "ok", "bytes": 15},
            "SKILLS-INDEX.md": {"status": "missing", "bytes": 0},
        },
        "warnings": [],
    }


def test_same_inputs_give_the_same_bytes() -> None:
    def fetched() -> FetchedRepo:
        return FetchedRepo(
            context=ok(".repo-context.json", CONTEXT),
            readme=ok("README.md", b"# t\n"),
            extra=(ok("ARCHITECTURE.md", b"a"),),
        )

    first = canonical_json(build(fetched()))
    second = canonical_json(build(fetched()))
    assert first == second
    assert content_hash(first) == content_hash(second)


def test_nothing_fetched() -> None:
    result = build(FetchedRepo(context=missing(".repo-context.json"), readme=missing("README.md")))
    assert result["context"] is None
    assert result["readme"] is None
    assert result["files"] == {}
    assert result["fetch"] == {
        ".repo-context.json": {"status": "missing", "bytes": 0},
        "README.md": {"status": "missing", "bytes": 0},
    }
    assert result["warnings"] == []


def test_unparsable_context_is_invalid_with_a_warning() -> None:
    result = build(
        FetchedRepo(context=ok(".repo-context.json", b"{nope"), readme=missing("README.md"))
    )
    assert result["context"] is None
    assert result["fetch"] == {
        ".repo-context.json": {"status": "invalid", "bytes": 5},
        "README.md": {"status": "missing", "bytes": 0},
    }
    assert result["warnings"] == [
        ".repo-context.json is not valid JSON: "
        "Expecting property name enclosed in double quotes at line 1 column 2"
    ]


def test_context_warnings_are_kept_with_a_partial_context() -> None:
    data = b'{"project_identity": {"name": "x"}, "topics": "a, b",}'
    result = build(FetchedRepo(context=ok(".repo-context.json", data), readme=missing("README.md")))
    assert result["context"]["topics"] == ["a", "b"]
    assert result["fetch"][".repo-context.json"]["status"] == "ok"
    assert len(result["warnings"]) == 2


def test_undecodable_text_is_replaced_with_a_warning() -> None:
    result = build(
        FetchedRepo(
            context=missing(".repo-context.json"),
            readme=ok("docs/README.rst", b"\xef\xbb\xbfTitle\n=====\n\xff\xfe end"),
            extra=(ok("ARCHITECTURE.md", b"caf\xe9"),),
        )
    )
    assert result["readme"] == {"path": "docs/README.rst", "text": "Title\n=====\n\ufffd\ufffd end"}
    assert result["files"] == {"ARCHITECTURE.md": "caf\ufffd"}
    assert result["warnings"] == [
        "docs/README.rst is not valid UTF-8; undecodable bytes were replaced",
        "ARCHITECTURE.md is not valid UTF-8; undecodable bytes were replaced",
    ]


def test_too_large_files_are_skipped_with_a_warning() -> None:
    result = build(
        FetchedRepo(
            context=FetchedFile(path=".repo-context.json", status="too_large", size=LIMIT + 1),
            readme=ok("README.md", b"x" * (LIMIT + 10)),  # a source that did not enforce it
        )
    )
    assert result["context"] is None
    assert result["readme"] is None
    assert result["fetch"] == {
        ".repo-context.json": {"status": "too_large", "bytes": LIMIT + 1},
        "README.md": {"status": "too_large", "bytes": LIMIT + 10},
    }
    assert result["warnings"] == [
        f".repo-context.json is too large: {LIMIT + 1} bytes, the limit is {LIMIT}; skipped",
        f"README.md is too large: {LIMIT + 10} bytes, the limit is {LIMIT}; skipped",
    ]


def test_not_modified_files_use_their_cached_body() -> None:
    cached = FetchedFile(path="README.md", status="not_modified", data=b"# cached\n", size=9)
    result = build(FetchedRepo(context=missing(".repo-context.json"), readme=cached))
    assert result["readme"] == {"path": "README.md", "text": "# cached\n"}
    assert result["fetch"]["README.md"] == {"status": "not_modified", "bytes": 9}


def test_a_misbehaving_source_is_reported_not_trusted() -> None:
    result = build(
        FetchedRepo(
            context=FetchedFile(path=".repo-context.json", status="ok"),
            readme=FetchedFile(path="README.md", status="weird", data=b"x", size=1),
            warnings=("README.md could not be read: Permission denied",),
        )
    )
    assert result["context"] is None
    assert result["readme"] is None
    assert result["fetch"] == {
        ".repo-context.json": {"status": "invalid", "bytes": 0},
        "README.md": {"status": "invalid", "bytes": 1},
    }
    assert result["warnings"] == [
        "README.md could not be read: Permission denied",
        ".repo-context.json: the source reported it ok but returned no content",
        "README.md: the source reported an unknown status 'weird'",
    ]


def test_a_path_fetched_twice_counts_once() -> None:
    result = build(
        FetchedRepo(
            context=missing(".repo-context.json"),
            readme=ok("README.md", b"first"),
            extra=(ok("README.md", b"second"), ok("NOTES.md", b"a"), ok("NOTES.md", b"b")),
        )
    )
    assert result["readme"] == {"path": "README.md", "text": "first"}
    assert result["files"] == {"NOTES.md": "a"}
    assert list(result["fetch"]) == [".repo-context.json", "README.md", "NOTES.md"]


def test_decode_text() -> None:
    assert decode_text(b"a\r\nb\rc\n") == ("a\nb\nc\n", True)
    assert decode_text(b"\xef\xbb\xbfbom") == ("bom", True)
    assert decode_text(b"\x80") == ("\ufffd", False)
