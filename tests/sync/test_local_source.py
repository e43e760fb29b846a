"""The local source: repository folders under root/<user>/, plain or git checkouts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from syncsvc.sources import local
from syncsvc.sources.base import FetchedRepo, RepoListing, SourceError, UserNotFoundError
from syncsvc.sources.local import LocalSource, is_valid_repository_name

EXTRA = ("ARCHITECTURE.md", "SKILLS-INDEX.md")
LIMIT = 1024


def make_repo(root: Path, name: str, files: dict[str, str | bytes], user: str = "demo") -> Path:
    folder = root / user / name
    folder.mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, "utf-8")
    return folder


def git(folder: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Demo",
        "GIT_AUTHOR_EMAIL": "demo@example.org",
        "GIT_COMMITTER_NAME": "Demo",
        "GIT_COMMITTER_EMAIL": "demo@example.org",
    }
    done = subprocess.run(
        ["git", "-C", str(folder), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit_all(folder: Path, message: str) -> str:
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", message)
    return git(folder, "rev-parse", "HEAD")


async def listing(source: LocalSource, name: str, user: str = "demo") -> RepoListing:
    found = {repo.full_name: repo for repo in await source.list_repositories(user)}
    return found[f"{user}/{name}"]


@pytest.fixture
def no_git_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the source shells out to git: HEAD must be read from the files."""

    def refuse(folder: Path) -> str | None:
        raise AssertionError(f"ran git rev-parse in {folder}")

    monkeypatch.setattr(local, "_rev_parse", refuse)


# --- listing ------------------------------------------------------------------------------


async def test_lists_every_valid_folder(tmp_path: Path) -> None:
    make_repo(tmp_path, "alpha", {"README.md": "# alpha"})
    make_repo(tmp_path, "beta.js", {})
    make_repo(tmp_path, ".github", {"profile/README.md": "hi"})
    (tmp_path / "demo" / "notes.txt").write_text("a file, not a repository")
    repos = await LocalSource(tmp_path).list_repositories("demo")
    assert sorted(repo.full_name for repo in repos) == [
        "demo/.github",
        "demo/alpha",
        "demo/beta.js",
    ]
    for repo in repos:
        assert repo.fingerprint.startswith("sha256:")
        assert repo.default_branch == "main"
        assert repo.metadata.description is None and repo.metadata.topics == ()


async def test_folders_with_invalid_names_are_skipped(tmp_path: Path) -> None:
    make_repo(tmp_path, "good", {})
    for bad in ("has space", "semi;colon", "x" * 101, "ünïcode", ".git"):
        make_repo(tmp_path, bad, {"README.md": "x"})
    repos = await LocalSource(tmp_path).list_repositories("demo")
    assert [repo.full_name for repo in repos] == ["demo/good"]


def test_repository_name_rule() -> None:
    assert is_valid_repository_name("a")
    assert is_valid_repository_name("My_repo-1.0")
    assert is_valid_repository_name("x" * 100)
    for bad in ("", ".", "..", "x" * 101, "a/b", "a b", "é"):
        assert not is_valid_repository_name(bad)


async def test_missing_user(tmp_path: Path) -> None:
    make_repo(tmp_path, "alpha", {})
    with pytest.raises(UserNotFoundError):
        await LocalSource(tmp_path).list_repositories("nobody")


@pytest.mark.parametrize("user", ["..", "../demo", "demo/alpha", "", "-demo", "x" * 40])
async def test_invalid_user_names_never_touch_the_filesystem(tmp_path: Path, user: str) -> None:
    make_repo(tmp_path, "alpha", {})
    with pytest.raises(UserNotFoundError):
        await LocalSource(tmp_path / "demo").list_repositories(user)


async def test_listing_details_come_from_the_context_file(tmp_path: Path) -> None:
    context = {
        "project_identity": {"name": "alpha", "description": "Alpha does things."},
        "tech_stack": {"primary": ["Rust", "Tokio"]},
        "topics": ["cli", "logs"],
    }
    make_repo(tmp_path, "alpha", {".repo-context.json": json.dumps(context)})
    drifted = {"projectIdentity": {"description": "Beta."}, "metadata": {"primary_language": "Go"}}
    make_repo(tmp_path, "beta", {".repo-context.json": json.dumps(drifted)})
    make_repo(tmp_path, "broken", {".repo-context.json": "{not json"})
    source = LocalSource(tmp_path)
    alpha = await listing(source, "alpha")
    assert (alpha.metadata.description, alpha.metadata.language, alpha.metadata.topics) == (
        "Alpha does things.",
        "Rust",
        ("cli", "logs"),
    )
    beta = await listing(source, "beta")
    assert (beta.metadata.description, beta.metadata.language, beta.metadata.topics) == (
        "Beta.",
        "Go",
        (),
    )
    broken = await listing(source, "broken")
    assert (broken.metadata.description, broken.metadata.language, broken.metadata.topics) == (
        None,
        None,
        (),
    )


# --- content hash of plain folders --------------------------------------------------------


async def test_content_hash_changes_with_content_and_nothing_else(tmp_path: Path) -> None:
    folder = make_repo(tmp_path, "alpha", {"README.md": "# alpha", "src/main.rs": "fn main() {}"})
    source = LocalSource(tmp_path)
    first = (await listing(source, "alpha")).fingerprint
    assert (await listing(source, "alpha")).fingerprint == first

    os.utime(folder / "README.md", ns=(1, 1))  # touched, not changed
    assert (await listing(source, "alpha")).fingerprint == first

    (folder / "src" / "main.rs").write_text("fn main() { println!() }")
    changed = (await listing(source, "alpha")).fingerprint
    assert changed != first

    (folder / "src" / "main.rs").write_text("fn main() {}")
    assert (await listing(source, "alpha")).fingerprint == first

    (folder / "src" / "main.rs").rename(folder / "src" / "lib.rs")
    assert (await listing(source, "alpha")).fingerprint not in (first, changed)


async def test_content_hash_skips_git_folders_and_counts_links_by_target(tmp_path: Path) -> None:
    folder = make_repo(tmp_path, "alpha", {"README.md": "# alpha", "docs/a.md": "a"})
    source = LocalSource(tmp_path)
    first = (await listing(source, "alpha")).fingerprint
    (folder / "docs" / ".git").mkdir()
    (folder / "docs" / ".git" / "objects").write_text("noise")
    assert (await listing(source, "alpha")).fingerprint == first

    outside = tmp_path / "outside.txt"
    outside.write_text("one")
    (folder / "link").symlink_to(outside)
    linked = (await listing(source, "alpha")).fingerprint
    assert linked != first
    outside.write_text("two")  # what a link points to is not the repository's content
    assert (await listing(source, "alpha")).fingerprint == linked


async def test_content_hash_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_repo(tmp_path, "alpha", {f"f{index:02}.txt": str(index) for index in range(10)})
    monkeypatch.setattr(local, "HASH_MAX_FILES", 5)
    source = LocalSource(tmp_path)
    first = (await listing(source, "alpha")).fingerprint
    (folder / "f09.txt").write_text("beyond the cap")
    assert (await listing(source, "alpha")).fingerprint == first
    (folder / "f00.txt").write_text("within the cap")
    assert (await listing(source, "alpha")).fingerprint != first


async def test_large_files_are_hashed_by_size_and_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_repo(tmp_path, "alpha", {"big.bin": b"a" * 100})
    monkeypatch.setattr(local, "HASH_MAX_FILE_BYTES", 10)
    source = LocalSource(tmp_path)
    first = (await listing(source, "alpha")).fingerprint
    os.utime(folder / "big.bin", ns=(10**18, 10**18))
    assert (await listing(source, "alpha")).fingerprint != first


# --- git checkouts ------------------------------------------------------------------------


async def test_git_checkout_fingerprint_is_head(tmp_path: Path, no_git_processes: None) -> None:
    folder = make_repo(tmp_path, "alpha", {"README.md": "# alpha"})
    git(folder, "init", "-q", "-b", "trunk")
    head = commit_all(folder, "first")
    source = LocalSource(tmp_path)
    repo = await listing(source, "alpha")
    assert repo.fingerprint == head
    assert repo.default_branch == "trunk"

    (folder / "README.md").write_text("# alpha, uncommitted")
    assert (await listing(source, "alpha")).fingerprint == head

    second = commit_all(folder, "second")
    assert second != head
    assert (await listing(source, "alpha")).fingerprint == second


async def test_packed_refs_and_detached_head(tmp_path: Path, no_git_processes: None) -> None:
    folder = make_repo(tmp_path, "alpha", {"README.md": "# alpha"})
    git(folder, "init", "-q", "-b", "main")
    first = commit_all(folder, "first")
    (folder / "README.md").write_text("# alpha 2")
    second = commit_all(folder, "second")
    git(folder, "pack-refs", "--all")
    assert not (folder / ".git" / "refs" / "heads" / "main").exists()
    source = LocalSource(tmp_path)
    assert (await listing(source, "alpha")).fingerprint == second

    git(folder, "checkout", "-q", "--detach", first)
    repo = await listing(source, "alpha")
    assert repo.fingerprint == first
    assert repo.default_branch == "main"  # no branch checked out: the default is assumed


async def test_linked_worktree(tmp_path: Path, no_git_processes: None) -> None:
    main = make_repo(tmp_path, "alpha", {"README.md": "# alpha"})
    git(main, "init", "-q", "-b", "main")
    commit_all(main, "first")
    worktree = tmp_path / "demo" / "alpha-feature"
    git(main, "worktree", "add", "-q", "-b", "feature", str(worktree))
    (worktree / "README.md").write_text("# feature")
    feature = commit_all(worktree, "feature work")
    repo = await listing(LocalSource(tmp_path), "alpha-feature")
    assert (repo.fingerprint, repo.default_branch) == (feature, "feature")


async def test_checkout_without_commits_is_hashed(tmp_path: Path) -> None:
    folder = make_repo(tmp_path, "alpha", {"README.md": "# alpha"})
    git(folder, "init", "-q", "-b", "main")
    repo = await listing(LocalSource(tmp_path), "alpha")
    assert repo.fingerprint.startswith("sha256:")


# --- fetching -----------------------------------------------------------------------------


async def fetch(source: LocalSource, name: str, extra: tuple[str, ...] = EXTRA) -> FetchedRepo:
    return await source.fetch(await listing(source, name), extra_files=extra, max_file_bytes=LIMIT)


async def test_fetches_the_context_readme_and_extra_files(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        "alpha",
        {".repo-context.json": "{}", "README.md": "# alpha", "ARCHITECTURE.md": "## arch"},
    )
    fetched = await fetch(LocalSource(tmp_path), "alpha")
    assert (fetched.context.path, fetched.context.status, fetched.context.data) == (
        ".repo-context.json",
        "ok",
        b"{}",
    )
    assert (fetched.readme.path, fetched.readme.data, fetched.readme.size) == (
        "README.md",
        b"# alpha",
        7,
    )
    assert [(f.path, f.status, f.data) for f in fetched.extra] == [
        ("ARCHITECTURE.md", "ok", b"## arch"),
        ("SKILLS-INDEX.md", "missing", None),
    ]
    assert fetched.warnings == ()


async def test_missing_files(tmp_path: Path) -> None:
    make_repo(tmp_path, "empty", {})
    fetched = await fetch(LocalSource(tmp_path), "empty")
    assert (fetched.context.status, fetched.readme.path, fetched.readme.status) == (
        "missing",
        "README.md",
        "missing",
    )
    assert [f.status for f in fetched.extra] == ["missing", "missing"]


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        (["README.rst", "README.md", "readme.txt", "README"], "README.md"),
        (["readme.md", "README.md"], "README.md"),
        (["README", "README.rst"], "README.rst"),
        (["Readme.txt", "README"], "Readme.txt"),
        (["README.md.bak", "README"], "README"),
        (["docs/README.md", "README.txt"], "README.txt"),
        (["docs/README.md"], "docs/README.md"),
        ([".github/README.md", "README.md"], ".github/README.md"),
    ],
)
async def test_readme_choice_is_deterministic(
    tmp_path: Path, names: list[str], chosen: str
) -> None:
    make_repo(tmp_path, "alpha", {name: f"text of {name}" for name in names})
    fetched = await fetch(LocalSource(tmp_path), "alpha")
    assert fetched.readme.path == chosen
    assert fetched.readme.data == f"text of {chosen}".encode()


async def test_a_readme_folder_is_not_a_readme(tmp_path: Path) -> None:
    folder = make_repo(tmp_path, "alpha", {"readme.txt": "the text"})
    (folder / "README.md").mkdir()
    fetched = await fetch(LocalSource(tmp_path), "alpha")
    assert (fetched.readme.path, fetched.readme.data) == ("readme.txt", b"the text")


async def test_too_large_files_are_not_read(tmp_path: Path) -> None:
    make_repo(
        tmp_path,
        "alpha",
        {"README.md": "r" * (LIMIT + 1), "ARCHITECTURE.md": "a" * LIMIT},
    )
    fetched = await fetch(LocalSource(tmp_path), "alpha")
    assert (fetched.readme.status, fetched.readme.size, fetched.readme.data) == (
        "too_large",
        LIMIT + 1,
        None,
    )
    assert (fetched.extra[0].status, fetched.extra[0].size) == ("ok", LIMIT)


async def test_symlinks_escaping_the_repository_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    (outside_dir / "SKILLS-INDEX.md").write_text("do not read either")
    folder = make_repo(tmp_path, "alpha", {"docs/real.md": "inside", "README.txt": "fallback"})
    (folder / "README.md").symlink_to(secret)
    (folder / ".repo-context.json").symlink_to("../../secret.txt")
    (folder / "ARCHITECTURE.md").symlink_to("docs/real.md")  # inside: fine
    (folder / "sub").symlink_to(outside_dir)
    fetched = await fetch(
        LocalSource(tmp_path), "alpha", ("ARCHITECTURE.md", "sub/SKILLS-INDEX.md")
    )
    assert fetched.context.status == "missing"
    assert (fetched.readme.path, fetched.readme.data) == ("README.txt", b"fallback")
    assert [(f.status, f.data) for f in fetched.extra] == [("ok", b"inside"), ("missing", None)]
    assert fetched.warnings == (
        ".repo-context.json is a symlink that points outside the repository; ignored",
        "README.md is a symlink that points outside the repository; ignored",
        "sub/SKILLS-INDEX.md is a symlink that points outside the repository; ignored",
    )


async def test_extra_paths_that_leave_the_repository_are_refused(tmp_path: Path) -> None:
    make_repo(tmp_path, "alpha", {})
    (tmp_path / "demo" / "secret.md").write_text("x")
    fetched = await fetch(LocalSource(tmp_path), "alpha", ("../secret.md", "/etc/hostname"))
    assert [f.status for f in fetched.extra] == ["missing", "missing"]
    assert fetched.warnings == (
        "'../secret.md' is not a relative path inside the repository; skipped",
        "'/etc/hostname' is not a relative path inside the repository; skipped",
    )


async def test_special_files_are_not_opened(tmp_path: Path) -> None:
    folder = make_repo(tmp_path, "alpha", {})
    os.mkfifo(folder / ".repo-context.json")  # opening it would block forever
    fetched = await fetch(LocalSource(tmp_path), "alpha")
    assert fetched.context.status == "missing"


async def test_repositories_linked_into_the_user_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "code" / "project"
    elsewhere.mkdir(parents=True)
    (elsewhere / "README.md").write_text("# linked")
    (tmp_path / "src" / "demo").mkdir(parents=True)
    (tmp_path / "src" / "demo" / "project").symlink_to(elsewhere)
    fetched = await fetch(LocalSource(tmp_path / "src"), "project")
    assert (fetched.readme.status, fetched.readme.data) == ("ok", b"# linked")


async def test_fetch_of_a_vanished_or_invalid_repository(tmp_path: Path) -> None:
    make_repo(tmp_path, "alpha", {})
    source = LocalSource(tmp_path)
    for name in ("demo/gone", "demo/..", "../demo/alpha", "demo"):
        with pytest.raises(SourceError) as caught:
            await source.fetch(
                RepoListing(full_name=name, fingerprint="x"), extra_files=(), max_file_bytes=LIMIT
            )
        assert not caught.value.transient
