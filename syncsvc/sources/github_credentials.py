"""Which GitHub token syncs which user: a user's own, from the credential store, else the shared.

The store is a directory with one file per user whose content is that user's token: a
mounted Kubernetes Secret (one key per user) or `<data dir>/credentials/<user>` for `up`.
File names are GitHub logins in lower case (logins are case-insensitive); a name that is not
a login is never turned into a path. Files are read again after `reread_s`, so a rotated
Secret is picked up without a restart (the kubelet swaps the files in place).

A Credential carries its token but never shows it: its repr and its `id` (the first 16 hex
digits of its SHA-256, the name it has in logs, metrics and the shared budget bucket) are
safe to print; the token cannot be recovered from the id.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SHARED", "Credential", "CredentialStore", "credential_id"]

log = logging.getLogger(__name__)

SHARED = "shared"
"""The `source` of the fallback credential (the operator's CONTEXTMESH_GITHUB_TOKEN)."""
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
    """'shared', or 'user' for a user's own token from the store."""

    @property
    def id(self) -> str:
        return credential_id(self.token)

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
    ) -> None:
        self._shared = Credential(shared_token, SHARED)
        self._directory = directory
        self._reread_s = reread_s
        self._clock = clock
        self._read: dict[str, tuple[float, Credential | None]] = {}

    @property
    def shared(self) -> Credential:
        return self._shared

    def __repr__(self) -> str:
        return f"CredentialStore(directory={str(self._directory)!r}, shared={self._shared!r})"

    def for_user(self, user: str | None) -> Credential:
        """The user's own credential when the store has one, else the shared one."""
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
        return remembered[1] or self._shared

    def _load(self, login: str) -> Credential | None:
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
        return Credential(token, "user") if token else None
