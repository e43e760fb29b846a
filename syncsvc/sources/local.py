"""A source that reads repositories from a folder: `root/<user>/<repository>/`.

Each repository folder is a plain folder or a git checkout. It is how contextmesh runs with no
GitHub account (the demo in examples/repos) and how a person indexes their own checkouts.

Fingerprints (what discovery compares with the last bundle to skip unchanged repositories):
- a git checkout: the commit at HEAD, read from `.git/HEAD`, the loose ref file or
  `packed-refs` directly (no process per repository); `git rev-parse HEAD` only when those do
  not answer (e.g. the reftable ref format). Uncommitted edits do not change it: commit, or
  refresh with force.
- a plain folder: `sha256:` + a hash of the relative path and content of every regular file,
  skipping `.git` folders. `list_repositories` is not told which extra files a job fetches,
  so it hashes them all, top-level files first (the files syncsvc reads live there), within
  caps: the first HASH_MAX_FILES files, and content only while HASH_MAX_BYTES are left and a
  file is at most HASH_MAX_FILE_BYTES; other files count by size and modification time. A
  symlink counts by its target path, never by what it points to.

Safety: user and repository names are validated before they touch a path; a folder whose
name is not a valid repository name is skipped; a file (or a folder on its way) that is a
symlink resolving outside the repository folder is treated as missing, with a warning; files
over max_file_bytes are not read. All file I/O runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import stat
import subprocess
from collections import deque
from pathlib import Path, PurePosixPath
from typing import Any

from meshkit.domain.documents import RepositoryMetadata
from syncsvc.repo_context import CONTEXT_FILE, parse_repo_context
from syncsvc.sources.base import (
    FetchedFile,
    FetchedRepo,
    RepoListing,
    Source,
    SourceError,
    UserNotFoundError,
)

__all__ = [
    "HASH_MAX_BYTES",
    "HASH_MAX_FILES",
    "HASH_MAX_FILE_BYTES",
    "LISTING_CONTEXT_MAX_BYTES",
    "LocalSource",
    "is_valid_repository_name",
    "is_valid_user_name",
]

HASH_MAX_FILES = 5000
HASH_MAX_BYTES = 64 * 1024 * 1024
HASH_MAX_FILE_BYTES = 4 * 1024 * 1024
# The listing reads .repo-context.json for a description and topics; larger ones are left
# to fetch, which applies the configured limit and warns.
LISTING_CONTEXT_MAX_BYTES = 1024 * 1024
# Topics on a listing, as GitHub caps them.
_MAX_TOPICS = 20
_GIT_TIMEOUT_S = 10.0

_REPO_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_USER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,37}[A-Za-z0-9])?$")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_REF = re.compile(r"^refs/[A-Za-z0-9._/+-]+$")
# README file extensions in order of preference; any other README name comes after these.
_README_EXTENSIONS = (
    "md",
    "markdown",
    "mdown",
    "mkdn",
    "rst",
    "txt",
    "adoc",
    "asciidoc",
    "org",
    "",
)
# Where a README may live, in GitHub's order of precedence.
_README_DIRS = (".github", "", "docs")

_log = logging.getLogger(__name__)


def is_valid_user_name(name: str) -> bool:
    """A GitHub user or organisation name: 1 to 39 letters, digits or inner hyphens."""
    return bool(_USER_NAME.match(name))


def is_valid_repository_name(name: str) -> bool:
    """A GitHub repository name: 1 to 100 of letters, digits, '.', '_', '-'; not '.' or '..'."""
    return bool(_REPO_NAME.match(name)) and name not in (".", "..")


class LocalSource(Source):
    """Repositories from `root/<user>/<repository>/` folders."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    async def list_repositories(self, user: str) -> list[RepoListing]:
        return await asyncio.to_thread(self._list, user)

    async def fetch(
        self,
        repo: RepoListing,
        *,
        extra_files: tuple[str, ...],
        max_file_bytes: int,
        user: str | None = None,
    ) -> FetchedRepo:
        return await asyncio.to_thread(self._fetch, repo, extra_files, max_file_bytes)

    async def fetch_files(
        self,
        repo: RepoListing,
        paths: tuple[str, ...],
        *,
        max_file_bytes: int,
        user: str | None = None,
    ) -> tuple[FetchedFile, ...]:
        def read() -> tuple[FetchedFile, ...]:
            reader = _RepoReader(self._folder(repo), max_file_bytes)
            return tuple(reader.read(path) for path in paths)

        return await asyncio.to_thread(read)

    # listing

    def _user_dir(self, user: str) -> Path:
        if not is_valid_user_name(user):  # a bad name never touches the filesystem
            raise UserNotFoundError(user)
        folder = self.root / user
        if not folder.is_dir():
            raise UserNotFoundError(user)
        return folder

    def _list(self, user: str) -> list[RepoListing]:
        folder = self._user_dir(user)
        listings: list[RepoListing] = []
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            raise SourceError(
                f"cannot list repositories of {user!r}: {exc.strerror}", transient=True
            ) from exc
        for entry in entries:
            if not entry.is_dir():  # follows a symlink: linking checkouts in is supported
                continue
            if not is_valid_repository_name(entry.name) or entry.name == ".git":
                _log.warning(
                    "skipping folder %r of user %r: not a valid repository name", entry.name, user
                )
                continue
            listings.append(_listing(user, Path(entry.path)))
        return listings

    # fetching

    def _folder(self, repo: RepoListing) -> Path:
        owner, _, name = repo.full_name.partition("/")
        if not (is_valid_user_name(owner) and is_valid_repository_name(name)):
            raise SourceError(f"{repo.full_name!r} is not a valid repository name", transient=False)
        folder = self.root / owner / name
        if not folder.is_dir():
            raise SourceError(f"repository {repo.full_name!r} not found", transient=False)
        return folder

    def _fetch(
        self, repo: RepoListing, extra_files: tuple[str, ...], max_bytes: int
    ) -> FetchedRepo:
        reader = _RepoReader(self._folder(repo), max_bytes)
        context = reader.read(CONTEXT_FILE)
        readme = reader.readme()
        extra = tuple(reader.read(path) for path in extra_files)
        return FetchedRepo(
            context=context, readme=readme, extra=extra, warnings=tuple(reader.warnings)
        )


def _listing(user: str, folder: Path) -> RepoListing:
    branch, head = _git_head(folder)
    description, language, topics = _listing_details(folder)
    return RepoListing(
        full_name=f"{user}/{folder.name}",
        fingerprint=head if head is not None else _content_hash(folder),
        default_branch=branch or "main",
        metadata=RepositoryMetadata(description=description, language=language, topics=topics),
    )


def _listing_details(folder: Path) -> tuple[str | None, str | None, tuple[str, ...]]:
    """Description, language and topics from .repo-context.json, best effort: any problem
    here is reported by fetch, where it lands on the repository's warnings."""
    data = _RepoReader(folder, LISTING_CONTEXT_MAX_BYTES).read(CONTEXT_FILE).data
    if data is None:
        return None, None, ()
    context = parse_repo_context(data, max_bytes=LISTING_CONTEXT_MAX_BYTES).context
    if context is None:
        return None, None, ()
    return context["description"], _language(context), tuple(context["topics"][:_MAX_TOPICS])


def _language(context: dict[str, Any]) -> str | None:
    """The declared primary language, else the first primary technology."""
    raw = context["raw"]
    for section in ("metadata", "project_identity", "tech_stack"):
        value = raw.get(section)
        if isinstance(value, dict):
            for key in ("primary_language", "primaryLanguage", "language"):
                if isinstance(value.get(key), str) and value[key].strip():
                    return str(value[key]).strip()[:100]
    tech: list[str] = context["tech"]
    return tech[0] if tech else None


# --- fingerprints -------------------------------------------------------------------------


def _git_head(folder: Path) -> tuple[str | None, str | None]:
    """(branch, commit) at HEAD of the checkout in folder; (None, None) for a plain folder or
    a checkout with no commit yet."""
    git_dir = _git_dir(folder)
    if git_dir is None:
        return None, None
    try:
        head = (git_dir / "HEAD").read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None, _rev_parse(folder)
    if _SHA.match(head):  # detached HEAD
        return None, head
    if not head.startswith("ref:"):
        return None, _rev_parse(folder)
    ref = head[4:].strip()
    if not _REF.match(ref) or ".." in ref:
        return None, _rev_parse(folder)
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    commit = _resolve_ref(_common_dir(git_dir), ref)
    return branch, commit if commit is not None else _rev_parse(folder)


def _git_dir(folder: Path) -> Path | None:
    """The git directory of a checkout: `.git/`, or where a `.git` file ('gitdir: ...', as in
    worktrees and submodules) points."""
    dot_git = folder / ".git"
    if dot_git.is_dir():
        return dot_git
    if not dot_git.is_file():
        return None
    try:
        line = dot_git.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not line.startswith("gitdir:"):
        return None
    target = Path(line[len("gitdir:") :].strip())
    target = target if target.is_absolute() else folder / target
    return target if target.is_dir() else None


def _common_dir(git_dir: Path) -> Path:
    """Where refs live: a linked worktree's git dir names the main one in `commondir`."""
    try:
        common = (git_dir / "commondir").read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return git_dir
    path = Path(common)
    return path if path.is_absolute() else git_dir / path


def _resolve_ref(common_dir: Path, ref: str) -> str | None:
    try:
        value = (common_dir / ref).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        value = ""
    if _SHA.match(value):
        return value
    try:
        packed = (common_dir / "packed-refs").read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in packed.splitlines():
        if line.startswith(("#", "^")):
            continue
        sha, _, name = line.partition(" ")
        if name.strip() == ref and _SHA.match(sha):
            return sha
    return None


def _rev_parse(folder: Path) -> str | None:
    """Ask git itself, for ref layouts the direct reads do not know; None when it cannot say
    (no git installed, or no commit yet), and the folder is then hashed like a plain one."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(  # a fixed argv, no shell
            [git, "-C", str(folder), "rev-parse", "--verify", "--quiet", "HEAD"],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and _SHA.match(sha) else None


def _content_hash(folder: Path) -> str:
    """sha256: over (kind, relative path, size, content digest) of the folder's files, in a
    fixed breadth-first, name-sorted order, within the caps of the module docstring."""
    digest = hashlib.sha256()
    files = 0
    budget = HASH_MAX_BYTES
    queue: deque[tuple[Path, str]] = deque([(folder, "")])
    while queue and files < HASH_MAX_FILES:
        directory, prefix = queue.popleft()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            if files >= HASH_MAX_FILES:
                break
            rel = prefix + entry.name
            try:
                if entry.is_symlink():
                    record = f"link\0{rel}\0{os.readlink(entry.path)}"
                elif entry.is_dir(follow_symlinks=False):
                    if entry.name != ".git":
                        queue.append((Path(entry.path), rel + "/"))
                    continue
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    if info.st_size <= min(budget, HASH_MAX_FILE_BYTES):
                        budget -= info.st_size
                        record = f"file\0{rel}\0{info.st_size}\0{_file_digest(entry.path)}"
                    else:
                        record = f"stat\0{rel}\0{info.st_size}\0{info.st_mtime_ns}"
                else:
                    continue  # sockets, FIFOs, devices: not content
            except OSError:
                record = f"unreadable\0{rel}"
            files += 1
            digest.update(record.encode("utf-8", "surrogateescape") + b"\n")
    return "sha256:" + digest.hexdigest()


def _file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# --- reading files ------------------------------------------------------------------------


class _RepoReader:
    """Reads files of one repository folder, refusing anything that resolves outside it."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.real = folder.resolve()
        self.max_bytes = max_bytes
        self.warnings: list[str] = []

    def read(self, path: str) -> FetchedFile:
        rel = PurePosixPath(path)
        if not path or rel.is_absolute() or ".." in rel.parts or "\\" in path:
            self.warnings.append(f"{path!r} is not a relative path inside the repository; skipped")
            return FetchedFile(path=path, status="missing")
        target = self.folder.joinpath(*rel.parts)
        try:
            real = target.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a broken link, or a symlink loop
            return FetchedFile(path=path, status="missing")
        if not real.is_relative_to(self.real):
            self.warnings.append(f"{path} is a symlink that points outside the repository; ignored")
            return FetchedFile(path=path, status="missing")
        try:
            return self._read_regular(path, real)
        except OSError as exc:
            self.warnings.append(f"{path} could not be read: {exc.strerror or 'I/O error'}")
            return FetchedFile(path=path, status="missing")

    def _read_regular(self, path: str, real: Path) -> FetchedFile:
        info = real.stat()
        if not stat.S_ISREG(info.st_mode):  # a folder, FIFO or device: never open it
            return FetchedFile(path=path, status="missing")
        if info.st_size > self.max_bytes:
            return FetchedFile(path=path, status="too_large", size=info.st_size)
        with real.open("rb") as handle:
            # Read one byte past the limit: the file may have grown since stat.
            data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            return FetchedFile(path=path, status="too_large", size=max(len(data), info.st_size))
        return FetchedFile(path=path, status="ok", data=data, size=len(data))

    def readme(self) -> FetchedFile:
        """The README: the first by GitHub's folder precedence, then by extension preference,
        then by name; a candidate that cannot be used is passed over for the next."""
        for directory in _README_DIRS:
            for name in self._readme_names(directory):
                fetched = self.read(f"{directory}/{name}" if directory else name)
                if fetched.status != "missing":
                    return fetched
        return FetchedFile(path="README.md", status="missing")

    def _readme_names(self, directory: str) -> list[str]:
        try:
            names = [
                entry.name
                for entry in os.scandir(self.folder / directory)
                if entry.name.split(".", 1)[0].casefold() == "readme"
            ]
        except OSError:
            return []
        return sorted(names, key=_readme_rank)


def _readme_rank(name: str) -> tuple[int, str]:
    extension = name.split(".", 1)[1].casefold() if "." in name else ""
    if extension in _README_EXTENSIONS:
        return _README_EXTENSIONS.index(extension), name
    return len(_README_EXTENSIONS), name
