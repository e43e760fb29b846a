"""Which GitHub token syncs which user: a user's own or a GitHub App installation's, from the
credential store, else the shared.

The store is a directory with one file per user: a mounted Kubernetes Secret (one key per
user) or `<data dir>/credentials/<user>` for `up`. A file holds either that user's token or
`installation:<id>`, naming an installation of the configured GitHub App whose tokens
(github_app) sync the user.
File names are GitHub logins in lower case (logins are case-insensitive); a name that is not
a login is never turned into a path. Files are read again after `reread_s`, so a rotated
Secret is picked up without a restart (the kubelet swaps the files in place).

A Credential carries its token but never shows it: its repr and its `id` (the first 16 hex
digits of its SHA-256, the name it has in logs, metrics and the shared budget bucket) are
safe to print; the token cannot be recovered from the id. An installation's credential has
no fixed token (it rotates hourly): its id is derived from the App and installation ids, so
its budget and lane stay the same across rotations.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from syncsvc.sources.base import SourceError
from syncsvc.sources.github_app import GithubApp, Installation

__all__ = ["INSTALLATION", "SHARED", "Credential", "CredentialStore", "credential_id"]

log = logging.getLogger(__name__)

SHARED = "shared"
"""The `source` of the fallback credential (the operator's CONTEXTMESH_GITHUB_TOKEN)."""
INSTALLATION = "installation"
"""The `source` of a credential minted for a GitHub App installation."""
_INSTALLATION_ENTRY = "installation:"
_LOGIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38})$")
MAX_TOKEN_BYTES = 4096
"""Far above any GitHub token; a larger file is not a token and is ignored."""


def credential_id(token: str | None) -> str:
    """A non-reversible name for a token; 'anonymous' for none."""
    if not token:
        return "anonymous"
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Credential:
    """A token and where it came from; only the token's id is ever shown."""

    token: str | None = field(repr=False)
    source: str = SHARED
    """'shared', 'user' for a user's own token from the store, or 'installation'."""
    installation: Installation | None = field(default=None, repr=False, compare=False)
    """For 'installation': where its current token comes from (`token` is None)."""

    @property
    def id(self) -> str:
        if self.installation is not None:
            return self.installation.key
        return credential_id(self.token)

    def secrets(self) -> tuple[str, ...]:
        """The tokens requests may carry now: what an error must never show."""
        current = self.installation.current if self.installation is not None else self.token
        return (current,) if current else ()

    def __repr__(self) -> str:
        return f"Credential(id='{self.id}', source='{self.source}')"


class CredentialStore:
    """The credential for each user: their own file in `directory`, else the shared token."""

    def __init__(
        self,
        shared_token: str | None,
        directory: Path | None = None,
        *,
        reread_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        app: GithubApp | None = None,
    ) -> None:
        """`app` mints the tokens of installations that entries name (without one, such a
        user's sync fails saying the App is not configured)."""
        self._shared = Credential(shared_token, SHARED)
        self._app = app or GithubApp(None, None, "")
        self._installations: dict[int, Installation] = {}
        """One per installation, kept across re-reads so its token is minted once an hour."""
        self._directory = directory
        self._reread_s = reread_s
        self._clock = clock
        self._read: dict[str, tuple[float, Credential | SourceError | None]] = {}

    @property
    def shared(self) -> Credential:
        return self._shared

    def __repr__(self) -> str:
        return f"CredentialStore(directory={str(self._directory)!r}, shared={self._shared!r})"

    def for_user(self, user: str | None) -> Credential:
        """The user's own credential when the store has one, else the shared one; SourceError
        for an entry that names an installation badly (never the shared token instead)."""
        if not user or self._directory is None:
            return self._shared
        login = user.lower()
        if not _LOGIN.match(login):
            return self._shared  # never a path from a name that is not a login
        now = self._clock()
        remembered = self._read.get(login)
        if remembered is None or now - remembered[0] >= self._reread_s:
            remembered = (now, self._load(login))
            self._read[login] = remembered
        if isinstance(remembered[1], SourceError):
            raise remembered[1]
        return remembered[1] or self._shared

    def _load(self, login: str) -> Credential | SourceError | None:
        path = self._directory / login if self._directory else None
        if path is None:
            return None
        try:
            if path.stat().st_size > MAX_TOKEN_BYTES:
                log.warning("credential file for %s is too large to be a token; ignored", login)
                return None
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            # The error names the file, never its content.
            log.warning(
                "credential file for %s unreadable (%s); using the shared token",
                login,
                type(exc).__name__,
            )
            return None
        if token.startswith(_INSTALLATION_ENTRY):
            return self._installation(login, token.removeprefix(_INSTALLATION_ENTRY).strip())
        return Credential(token, "user") if token else None

    def _installation(self, login: str, number: str) -> Credential | SourceError:
        if not number.isascii() or not number.isdigit() or len(number) > 18:
            # A user who meant to be synced as an installation must not be synced with the
            # shared token instead; the message leaves out what the file holds.
            return SourceError(
                f"the credential store entry for {login} must read installation:<number>",
                transient=False,
            )
        installation_id = int(number)
        installation = self._installations.get(installation_id)
        if installation is None:
            installation = Installation(self._app, installation_id)
            self._installations[installation_id] = installation
        return Credential(None, INSTALLATION, installation)
