"""The typed bundle and repository result read and write the JSON that was stored before them.

Bundles are content-addressed: a bundle written by an earlier version must load, and the same
inputs must give the same bytes, or every user's unchanged bundle would get a new hash (and a
pointless training). tests/sync/data/bundle-v1.json was written by the dict-based writer
that the typed documents replaced, from the inputs below.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks

from mergesvc.merge import build_bundle
from meshkit.domain.bundle import canonical_json, content_hash, repo_result_key
from meshkit.domain.documents import (
    Bundle,
    BundleRepository,
    FetchRecord,
    RepositoryContext,
    RepositoryMetadata,
    RepositoryResult,
)
from syncsvc.repo_result import ensure_encodable, normalize_repository
from syncsvc.sources.base import FetchedFile, FetchedRepo, RepoListing

FIXTURE = Path(__file__).parent / "data" / "bundle-v1.json"
FIXTURE_HASH = "0baa2e565eefdafd81cfbba73a4cb25f503d30bf56cf865e41e4eb8daefdb310"

LIMIT = 4096
_CONTEXT = json.dumps(
    {
        "project_identity": {"name": "tidepool", "description": "Predicts  tides — für Häfen."},
        "tech_stack": {"primary": ["Python", "NumPy"], "secondary": ["FastAPI"]},
        "skill_manifest": {"technical": ["Harmonic analysis"]},
        "components": {
            "harmonics": {"description": "Fits 37 constituents."},
            "cli": "Command line.",
        },
        "faq": [{"question": "Which stations?", "answer": "Any with a year of data."}],
        "extra": {"ratio": 0.25, "nested": [1, [2, {"deep": None}]], "flag": True},
    },
    ensure_ascii=False,
).encode()


def _ok(path: str, data: bytes) -> FetchedFile:
    return FetchedFile(path=path, status="ok", data=data, size=len(data))


REPOSITORIES = [
    (
        RepoListing(
            full_name="octo/tidepool",
            fingerprint="2026-11-01T10:00:00Z@main",
            metadata=RepositoryMetadata(
                description="Tide predictions",
                language="Python",
                topics=("tides", "oceanography"),
                homepage="https://tidepool.example",
                url="https://github.com/octo/tidepool",
            ),
        ),
        FetchedRepo(
            context=_ok(".repo-context.json", _CONTEXT),
            readme=_ok(
                "README.md",
                b"# tidepool\r\n\r\nPredicts tides.\r\n\r\n## Usage\r\n\r\n"
                b"```sh\r\ntide --station X\r\n```\r\n",
            ),
            extra=(
                _ok("ARCHITECTURE.md", "# Architecture\n\nOne process, no états.\n".encode()),
                FetchedFile(path="SKILLS-INDEX.md", status="missing"),
            ),
            warnings=("a warning the source gave",),
        ),
        job_pb2.REPO_STATUS_SYNCED,
    ),
    (
        RepoListing(
            full_name="octo/Zeta",
            fingerprint="sha256:zeta",
            default_branch="trunk",
            metadata=RepositoryMetadata(private=True),
        ),
        FetchedRepo(
            context=_ok(".repo-context.json", b'{"name": "zeta",}'),
            readme=FetchedFile(path="README.rst", status="too_large", size=LIMIT + 1),
            extra=(
                FetchedFile(
                    path="ARCHITECTURE.md", status="not_modified", data=b"\xffcached\n", size=8
                ),
            ),
        ),
        job_pb2.REPO_STATUS_UNCHANGED,
    ),
    (
        RepoListing(
            full_name="octo/stale",
            fingerprint="sha256:stale",
            metadata=RepositoryMetadata(description="Old but good"),
        ),
        FetchedRepo(
            context=FetchedFile(path=".repo-context.json", status="missing"),
            readme=_ok("README.md", b"Title\n=====\n\nSome text that is long enough to keep.\n"),
        ),
        job_pb2.REPO_STATUS_FAILED,
    ),
]
GONE = sync_tasks.RepoOutcome(
    repository="octo/gone",
    index=3,
    status=job_pb2.REPO_STATUS_FAILED,
    fingerprint="sha256:gone",
    reason="GitHub answered 404",
    warnings=["a warning of the failed sync"],
)


def test_a_stored_bundle_reads_and_writes_back_byte_for_byte() -> None:
    data = FIXTURE.read_bytes()
    assert content_hash(data) == FIXTURE_HASH

    document = Bundle.from_json(json.loads(data))

    assert canonical_json(document.to_json()) == data
    assert [r.result.repository for r in document.repositories] == [
        "octo/gone",
        "octo/stale",
        "octo/tidepool",
        "octo/Zeta",
    ]
    gone, stale, tidepool, _ = document.repositories
    assert gone.result.is_placeholder and gone.sync_error == "GitHub answered 404"
    assert stale.sync_error == "rate limited" and stale.result.readme is not None
    assert tidepool.result.context is not None
    assert tidepool.result.context.raw["extra"]["ratio"] == 0.25


def test_the_same_inputs_give_the_same_bundle_bytes_as_before() -> None:
    results: dict[str, RepositoryResult] = {}
    outcomes = []
    for index, (listing, fetched, status) in enumerate(REPOSITORIES):
        result = normalize_repository(listing, fetched, max_file_bytes=LIMIT)
        data = ensure_encodable(result)
        key = repo_result_key(listing.full_name, content_hash(data))
        results[key] = RepositoryResult.from_json(json.loads(data))  # as merge reads it
        assert results[key] == result
        failed = status == job_pb2.REPO_STATUS_FAILED
        outcomes.append(
            sync_tasks.RepoOutcome(
                repository=listing.full_name,
                index=index,
                status=status,
                fingerprint=listing.fingerprint,
                result_key=key,
                reason="rate limited" if failed else "",
            )
        )
    outcomes.append(GONE)

    data = canonical_json(build_bundle("octo", outcomes, results).to_json())

    assert data == FIXTURE.read_bytes()


def test_old_or_partial_results_load_with_what_they_have() -> None:
    result = RepositoryResult.from_json(
        {
            "format": "contextmesh.repo/v1",
            "repository": "octo/old",
            "metadata": {"description": "Old", "topics": ["a", 3, None], "private": "yes"},
            "context": {"name": "old", "tech": "Python", "faq": [{"question": "Why?"}, 7]},
            "readme": {"text": "# old\n"},
            "files": {"NOTES.md": "n", "bad.md": None},
            "fetch": {"README.md": {"status": "ok"}, "x": "ok"},
        }
    )

    assert result == RepositoryResult(
        repository="octo/old",
        fingerprint="",
        metadata=RepositoryMetadata(description="Old", topics=("a",)),
        context=RepositoryContext(name="old"),
        readme=result.readme,
        files={"NOTES.md": "n"},
        fetch={"README.md": FetchRecord("ok", 0)},
    )
    assert result.readme is not None and result.readme.text == "# old\n"
    assert not result.is_placeholder


def test_a_placeholder_keeps_the_shape_the_merge_always_wrote() -> None:
    entry = BundleRepository(
        RepositoryResult.placeholder("octo/gone", "sha256:gone", ("it failed",)), "404"
    )

    assert entry.to_json() == {
        "repository": "octo/gone",
        "fingerprint": "sha256:gone",
        "context": None,
        "readme": None,
        "files": {},
        "metadata": {},
        "fetch": {},
        "warnings": ["it failed"],
        "sync_error": "404",
    }
    assert BundleRepository.from_json(entry.to_json()) == entry


@pytest.mark.parametrize("document", [[], {"user": "u"}, {"format": "contextmesh.repo/v1"}])
def test_what_is_not_a_bundle_is_refused(document: object) -> None:
    with pytest.raises(ValueError, match=r"not a contextmesh\.bundle/v1 document"):
        Bundle.from_json(document)
