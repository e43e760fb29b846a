"""A thin repository (no .repo-context.json, a README of a line or two) is synced with its
package manifests, whose description and keywords then become passages; a repository with
context costs no extra request."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from meshkit.domain.passages import MANIFESTS, passages_of, repository_facts
from syncsvc.repo_result import normalize_repository
from syncsvc.repository import with_manifests
from syncsvc.sources.base import RepoListing, Source
from syncsvc.sources.github import GithubSource
from syncsvc.sources.local import LocalSource
from tests.support.fake_github import FakeGithub

CAP = 1024 * 1024
PACKAGE = {
    "name": "tidy",
    "description": "Reformats grocery receipts into a household budget spreadsheet",
    "keywords": ["budgeting", "receipts"],
}


async def synced_passages(source: Source, listing: RepoListing) -> list[str]:
    fetched = await source.fetch(listing, extra_files=(), max_file_bytes=CAP)
    fetched = await with_manifests(source, listing, fetched, CAP)
    result = normalize_repository(listing, fetched, max_file_bytes=CAP)
    return [p.text for p in passages_of(repository_facts(result))]


async def test_a_thin_repository_is_read_with_its_manifests_and_matched_on_them(
    fake_github: FakeGithub, make_github_source: Callable[..., GithubSource]
) -> None:
    fake_github.add_repo(
        "octo/tidy", {"README.md": "# tidy\nA tool.", "package.json": json.dumps(PACKAGE)}
    )
    source = make_github_source()
    [listing] = await source.list_repositories("octo")

    texts = await synced_passages(source, listing)

    assert any(PACKAGE["description"] in text for text in texts), texts
    assert any("budgeting" in text and "receipts" in text for text in texts), texts
    asked = {r.path.rsplit("/", 1)[-1] for r in fake_github.requests(kind="contents")}
    assert set(MANIFESTS) <= asked, "every manifest is looked for"


async def test_a_repository_with_context_costs_no_manifest_request(
    fake_github: FakeGithub, make_github_source: Callable[..., GithubSource]
) -> None:
    fake_github.add_repo(
        "octo/rich",
        {
            ".repo-context.json": json.dumps({"description": "A weather station"}),
            "README.md": "# rich\nA tool.",
            "package.json": json.dumps(PACKAGE),
        },
    )
    source = make_github_source()
    [listing] = await source.list_repositories("octo")
    fetched = await source.fetch(listing, extra_files=(), max_file_bytes=CAP)
    before = fake_github.count(kind="contents")

    assert await with_manifests(source, listing, fetched, CAP) is fetched
    assert fake_github.count(kind="contents") == before


async def test_a_long_readme_is_not_thin(
    fake_github: FakeGithub, make_github_source: Callable[..., GithubSource]
) -> None:
    readme = "# long\n\n" + "This project measures soil moisture in raised beds. " * 10
    fake_github.add_repo("octo/long", {"README.md": readme, "package.json": json.dumps(PACKAGE)})
    source = make_github_source()
    [listing] = await source.list_repositories("octo")
    fetched = await source.fetch(listing, extra_files=(), max_file_bytes=CAP)

    assert await with_manifests(source, listing, fetched, CAP) is fetched


async def test_a_manifest_already_among_the_extra_files_is_not_asked_for_twice(
    fake_github: FakeGithub, make_github_source: Callable[..., GithubSource]
) -> None:
    fake_github.add_repo("octo/tidy", {"README.md": "# tidy", "package.json": json.dumps(PACKAGE)})
    source = make_github_source()
    [listing] = await source.list_repositories("octo")
    fetched = await source.fetch(listing, extra_files=("package.json",), max_file_bytes=CAP)

    merged = await with_manifests(source, listing, fetched, CAP)

    assert sorted(f.path for f in merged.extra) == sorted(MANIFESTS)
    asked = [r.path for r in fake_github.requests(kind="contents")]
    assert sum(path.endswith("/package.json") for path in asked) == 1


async def test_the_local_source_reads_a_thin_repositorys_manifests(tmp_path: Path) -> None:
    folder = tmp_path / "ana" / "ledger"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# ledger\n")
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "ledger"\n'
        'description = "Splits shared household bills between flatmates"\n'
        'keywords = ["flatshare"]\n'
    )
    source = LocalSource(tmp_path)
    [listing] = await source.list_repositories("ana")

    texts = await synced_passages(source, listing)

    assert any("Splits shared household bills between flatmates" in t for t in texts), texts
    assert any("flatshare" in t for t in texts), texts
