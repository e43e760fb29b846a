"""Hostile text from a source fails one repository at most, never discovery or a user.

A lone surrogate ("\\ud800", valid JSON) in a `.repo-context.json` or in GitHub's JSON decodes
to a Python string that UTF-8 cannot encode. Every test here follows such text from a source
to what discovery and sync store: the plan (canonical JSON), the sync task (protobuf,
validated as a worker validates it) and the repository result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from contextmesh.sync.v1 import tasks_pb2 as sync_tasks
from contextmesh.task.v1 import task_pb2

from meshkit.domain.bundle import canonical_json
from meshkit.domain.documents import RepositoryMetadata
from meshkit.domain.ids import new_job_id, sync_msg_id
from meshkit.text import REPLACEMENT
from meshkit.worker import PermanentError, decode_task
from syncsvc.repo_result import ensure_encodable, normalize_repository
from syncsvc.sources.base import FetchedFile, FetchedRepo, RepoListing, SourceError
from syncsvc.sources.github import GithubSource
from syncsvc.sources.local import LocalSource
from tests.support.fake_github import FakeGithub

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repos" / "demo" / "logslice"
EXTRA = ("ARCHITECTURE.md",)
LIMIT = 1024 * 1024
LONE = "\ud800"
MakeSource = Callable[..., GithubSource]


def stored_by_discovery(listing: RepoListing) -> sync_tasks.SyncRepoTask:
    """What discovery does with a listing: its plan entry as canonical JSON, then the sync
    task, which the sync worker parses and validates (meshkit.worker.decode_task)."""
    canonical_json(dataclasses.asdict(listing))
    job_id = new_job_id()
    task = sync_tasks.SyncRepoTask(
        meta=task_pb2.TaskMeta(job_id=job_id, task_id=sync_msg_id(job_id, 0), attempt=1),
        user="demo",
        repository=listing.full_name,
        index=0,
        fingerprint=listing.fingerprint,
        default_branch=listing.default_branch,
        metadata=sync_tasks.RepoMetadata(
            description=listing.metadata.description or "",
            language=listing.metadata.language or "",
            topics=listing.metadata.topics,
            homepage=listing.metadata.homepage or "",
            url=listing.metadata.url or "",
            private=listing.metadata.private,
        ),
    )
    return decode_task(sync_tasks.SyncRepoTask, task.SerializeToString())


def demo_like(root: Path, name: str = "logslice", **identity: object) -> Path:
    """A copy of a demo repository whose project_identity fields are replaced by identity."""
    folder = root / "demo" / name
    shutil.copytree(EXAMPLE, folder)
    document = json.loads((folder / ".repo-context.json").read_text("utf-8"))
    document["project_identity"].update(identity)
    # json.dumps escapes the surrogate as \ud800: the file is valid UTF-8 and valid JSON.
    (folder / ".repo-context.json").write_text(json.dumps(document), "utf-8")
    return folder


def write_bytes_name(folder: Path, name: bytes, data: bytes) -> None:
    """A file whose name is not UTF-8: os.scandir hands it over with a surrogate escape."""
    Path(os.fsdecode(bytes(folder) + b"/" + name)).write_bytes(data)


# -- the local source ----------------------------------------------------------------------


async def test_lone_surrogate_in_local_description_lists_and_syncs_with_a_warning(
    tmp_path: Path,
) -> None:
    demo_like(tmp_path, description=LONE)
    source = LocalSource(tmp_path)

    [listing] = await source.list_repositories("demo")
    assert listing.metadata.description == REPLACEMENT
    task = stored_by_discovery(listing)
    assert task.metadata.description == REPLACEMENT

    fetched = await source.fetch(listing, extra_files=EXTRA, max_file_bytes=LIMIT)
    result = normalize_repository(listing, fetched, max_file_bytes=LIMIT).to_json()
    canonical_json(result)
    assert result["context"]["description"] == REPLACEMENT
    assert result["context"]["tech"][:2] == ["Rust", "Tokio"]  # the rest of the file is read
    assert any("project_identity.description" in w and "U+FFFD" in w for w in result["warnings"]), (
        result["warnings"]
    )


async def test_surrogates_anywhere_in_the_context_file_are_replaced(tmp_path: Path) -> None:
    folder = demo_like(tmp_path, name="odd", version="\udc00\ud800x")
    document = json.loads((folder / ".repo-context.json").read_text("utf-8"))
    document["tech_stack"]["primary"].append("Zig\udfff")
    document["\ud83d\ude00 key \udead"] = {"nested": ["\ud800"] * 3}
    (folder / ".repo-context.json").write_text(json.dumps(document), "utf-8")
    source = LocalSource(tmp_path)

    [listing] = await source.list_repositories("demo")
    stored_by_discovery(listing)
    fetched = await source.fetch(listing, extra_files=EXTRA, max_file_bytes=LIMIT)
    result = normalize_repository(listing, fetched, max_file_bytes=LIMIT).to_json()

    data = canonical_json(result)
    raw = result["context"]["raw"]
    assert raw["project_identity"]["version"] == REPLACEMENT * 2 + "x"
    assert raw["\U0001f600 key " + REPLACEMENT] == {"nested": [REPLACEMENT] * 3}
    assert "Zig" + REPLACEMENT in result["context"]["tech"]
    assert json.loads(data) == result


async def test_undecodable_readme_file_name_is_replaced(tmp_path: Path) -> None:
    folder = demo_like(tmp_path)
    (folder / "README.md").unlink()
    write_bytes_name(folder, b"README.md\xff", b"# readme\n")
    source = LocalSource(tmp_path)

    [listing] = await source.list_repositories("demo")
    fetched = await source.fetch(listing, extra_files=EXTRA, max_file_bytes=LIMIT)
    result = normalize_repository(listing, fetched, max_file_bytes=LIMIT).to_json()

    canonical_json(result)
    assert result["readme"] == {"path": f"README.md{REPLACEMENT}", "text": "# readme\n"}
    assert any("U+FFFD" in w for w in result["warnings"]), result["warnings"]


# -- the GitHub source ---------------------------------------------------------------------


async def test_lone_surrogates_in_github_json_list_and_sync_with_a_warning(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    context = json.loads((EXAMPLE / ".repo-context.json").read_text("utf-8"))
    context["project_identity"]["description"] = LONE
    fake_github.add_repo(
        "octo/hostile",
        {".repo-context.json": json.dumps(context), "README.md": "# hostile\n"},
        description=LONE,
        topics=["ok", "bad\udc00"],
        homepage="https://example.org/\ud800",
        language="Rust\ud800",
    )
    fake_github.add_repo("octo/fine", {"README.md": "# fine\n"}, description="fine")
    source = make_github_source()

    listings = {r.full_name: r for r in await source.list_repositories("octo")}
    listing = listings["octo/hostile"]
    assert listing.metadata.description == REPLACEMENT
    assert listing.metadata.topics == ("ok", "bad" + REPLACEMENT)
    for each in listings.values():
        stored_by_discovery(each)

    fetched = await source.fetch(listing, extra_files=EXTRA, max_file_bytes=LIMIT)
    result = normalize_repository(listing, fetched, max_file_bytes=LIMIT).to_json()
    canonical_json(result)
    assert result["context"]["description"] == REPLACEMENT
    assert result["metadata"]["homepage"] == "https://example.org/" + REPLACEMENT
    warnings = "\n".join(result["warnings"])
    assert "project_identity.description" in warnings
    assert "metadata" in warnings and "description" in warnings


async def test_github_readme_path_that_cannot_be_encoded_is_replaced(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_repo("octo/odd-readme", {"README\udc80.md": "# odd\n"})
    source = make_github_source()

    [listing] = await source.list_repositories("octo")
    fetched = await source.fetch(listing, extra_files=EXTRA, max_file_bytes=LIMIT)
    result = normalize_repository(listing, fetched, max_file_bytes=LIMIT).to_json()

    canonical_json(result)
    assert result["readme"]["path"] == f"README{REPLACEMENT}.md"


async def test_github_repository_with_an_unusable_name_is_skipped(
    fake_github: FakeGithub, make_github_source: MakeSource
) -> None:
    fake_github.add_repo("octo/fine")
    fake_github.add_repo("octo/bad name\ud800")
    source = make_github_source()

    listings = await source.list_repositories("octo")

    assert [r.full_name for r in listings] == ["octo/fine"]


# -- listings, errors and results hold what their consumers accept -------------------------


def test_listing_fields_fit_the_sync_task() -> None:
    listing = RepoListing(
        full_name="octo/long",
        fingerprint="x" * 5000 + LONE,
        default_branch="b" * 5000,
        metadata=RepositoryMetadata(
            description="d" * 100_000,
            language="l" * 5000,
            topics=tuple(f"topic-{i}" * 100 for i in range(1000)),
            homepage="h" * 100_000,
            url="u" * 100_000,
        ),
    )
    other = dataclasses.replace(listing, fingerprint="x" * 5000 + "y")

    task = stored_by_discovery(listing)

    assert len(task.SerializeToString()) < 64 * 1024
    assert listing.fingerprint.startswith("sha256:")
    assert other.fingerprint != listing.fingerprint  # still tells states apart
    assert dataclasses.replace(listing).fingerprint == listing.fingerprint  # and is stable


def test_source_error_messages_are_encodable() -> None:
    error = SourceError(f"GitHub said {LONE}", transient=False)
    assert str(error) == f"GitHub said {REPLACEMENT}"


def test_a_result_that_cannot_be_encoded_fails_the_repository_at_once() -> None:
    listing = RepoListing(full_name="octo/x", fingerprint="f")
    fetched = FetchedRepo(
        context=FetchedFile(".repo-context.json", "missing"),
        readme=FetchedFile("README.md", "missing"),
    )
    result = normalize_repository(listing, fetched, max_file_bytes=LIMIT)
    assert ensure_encodable(result) == canonical_json(result.to_json())

    assert result.metadata is not None
    nan = dataclasses.replace(result.metadata, language=float("nan"))  # no JSON may hold it
    with pytest.raises(PermanentError, match="octo/x: its result cannot be stored"):
        ensure_encodable(dataclasses.replace(result, metadata=nan))
