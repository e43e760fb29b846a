"""Per-repository normalisation and the bundle encoder under any source output: the result
always encodes, canonical JSON is deterministic and round-trips, the content hash is stable."""

from __future__ import annotations

import json
import random
from typing import Any

from contextmesh.job.v1 import job_pb2
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from hypothesis import given
from hypothesis import strategies as st

from mergesvc.merge import build_bundle
from meshkit.domain.bundle import canonical_json, content_hash
from meshkit.domain.documents import RepositoryMetadata, RepositoryResult
from syncsvc.repo_result import FETCH_STATUSES, ensure_encodable, normalize_repository
from syncsvc.sources.base import FetchedFile, FetchedRepo, RepoListing
from tests.fuzz.strategies import context_files, hostile_text, json_values

LIMIT = 4096
_maybe_text = st.one_of(st.none(), hostile_text)

listings = st.builds(
    RepoListing,
    full_name=st.sampled_from(["octo/a", "octo/b.js", "Octo/C_d", "x/y"]),
    fingerprint=hostile_text,
    default_branch=hostile_text,
    metadata=st.builds(
        RepositoryMetadata,
        description=_maybe_text,
        language=_maybe_text,
        topics=st.lists(hostile_text, max_size=25).map(tuple),
        homepage=_maybe_text,
        url=_maybe_text,
        private=st.booleans(),
    ),
)
_paths = st.one_of(
    st.sampled_from(["README.md", "docs/README.rst", "ARCHITECTURE.md", ".repo-context.json"]),
    hostile_text,
)
_statuses = st.sampled_from([*FETCH_STATUSES, "weird"])
_bodies = st.one_of(st.none(), st.binary(max_size=LIMIT + 10), context_files())


def _file(path: st.SearchStrategy[str]) -> st.SearchStrategy[FetchedFile]:
    return st.builds(
        FetchedFile, path=path, status=_statuses, data=_bodies, size=st.integers(0, 2**40)
    )


_small_repos = st.builds(
    FetchedRepo,
    context=st.builds(
        FetchedFile,
        path=st.just(".repo-context.json"),
        status=st.just("ok"),
        data=json_values(8).map(lambda doc: json.dumps({"project_identity": doc}).encode()),
    ),
    readme=_file(_paths),
)
"""Cheaper source output, for tests that need several repositories per example."""

fetched_repos = st.builds(
    FetchedRepo,
    context=_file(st.just(".repo-context.json")),
    readme=_file(_paths),
    extra=st.lists(_file(_paths), max_size=3).map(tuple),
    warnings=st.lists(hostile_text, max_size=3).map(tuple),
)


def typed(results: dict[str, dict[str, Any]]) -> dict[str, RepositoryResult]:
    return {key: RepositoryResult.from_json(doc) for key, doc in results.items()}


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON document with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


@given(listings, fetched_repos)
def test_any_source_output_normalises_to_an_encodable_result(
    listing: RepoListing, fetched: FetchedRepo
) -> None:
    document = normalize_repository(listing, fetched, max_file_bytes=LIMIT)
    result = document.to_json()

    data = canonical_json(result)
    assert ensure_encodable(document) == data
    assert json.loads(data) == result  # round-trips
    assert RepositoryResult.from_json(json.loads(data)) == document  # and reads back the same
    again = normalize_repository(listing, fetched, max_file_bytes=LIMIT)
    assert ensure_encodable(again) == data  # a pure function: redelivery stores the same key
    assert all(isinstance(w, str) for w in result["warnings"])
    assert set(result["fetch"]) >= {".repo-context.json"}
    for entry in result["fetch"].values():
        assert entry["status"] in FETCH_STATUSES
    assert len(result["metadata"]["topics"]) <= 20


@given(json_values(), st.randoms(use_true_random=False))
def test_canonical_json_is_one_byte_form(document: Any, rng: random.Random) -> None:
    try:
        data = canonical_json(document)
    except UnicodeEncodeError:  # a lone surrogate: what the sources and reader replace
        return
    assert canonical_json(shuffled(document, rng)) == data
    assert canonical_json(json.loads(data)) == data
    assert content_hash(data) == content_hash(canonical_json(json.loads(data)))


@given(st.lists(st.tuples(listings, _small_repos), min_size=1, max_size=3), st.randoms())
def test_bundle_bytes_and_hash_depend_on_content_only(
    repos: list[tuple[RepoListing, FetchedRepo]], rng: random.Random
) -> None:
    results: dict[str, dict[str, Any]] = {}  # as merge reads them back from the blob store
    outcomes = []
    for index, (listing, fetched) in enumerate(repos):
        result = normalize_repository(
            RepoListing(**{**vars(listing), "full_name": f"octo/r{index}"}),
            fetched,
            max_file_bytes=LIMIT,
        )
        data = ensure_encodable(result)
        key = f"repos/octo/r{index}/{content_hash(data)}.json"
        results[key] = json.loads(data)
        outcomes.append(
            sync_tasks.RepoOutcome(
                repository=f"octo/r{index}",
                index=index,
                status=job_pb2.REPO_STATUS_SYNCED,
                result_key=key,
                warnings=result.warnings,
            )
        )
    bundle = canonical_json(build_bundle("octo", outcomes, typed(results)).to_json())

    rng.shuffle(outcomes)
    again = canonical_json(build_bundle("octo", outcomes, typed(shuffled(results, rng))).to_json())
    assert again == bundle and content_hash(again) == content_hash(bundle)
    assert canonical_json(json.loads(bundle)) == bundle
