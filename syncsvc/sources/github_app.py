"""GitHub App installation tokens: minted from the App's private key, cached, renewed in time.

An installation token is asked for with a JWT signed by the App's key (RS256; iat backdated
for clock drift, at most ten minutes long, iss = the App id):

    POST {api}/app/installations/{id}/access_tokens   Authorization: Bearer <JWT>
    -> 201 {"token": ..., "expires_at": "2026-12-01T12:00:00Z"}

A token lives an hour. One Installation per installation id and process keeps the token it
minted, lets one mint run at a time (concurrent requests wait for it rather than each
minting), mints again `refresh_margin_s` before `expires_at`, and forgets a token GitHub
refused early (401) so the next request mints at once.

The key file is read at every mint (about hourly), so a rotated Secret is picked up without
a restart. Neither the key, the JWT nor a token is ever part of a message, a repr or a log
line: errors name the setting or the installation to fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from syncsvc.sources.base import SourceError

__all__ = [
    "JWT_BACKDATE_S",
    "JWT_LIFETIME_S",
    "REFRESH_MARGIN_S",
    "GithubApp",
    "Installation",
    "installation_key",
]

log = logging.getLogger(__name__)

JWT_BACKDATE_S = 60
"""iat this far in the past: GitHub refuses a JWT issued 'in the future' by a fast clock."""
JWT_LIFETIME_S = 540
"""exp after now; GitHub allows at most ten minutes."""
REFRESH_MARGIN_S = 300.0
"""A token this close to its expires_at is renewed before use, so none expires in flight."""
MAX_KEY_BYTES = 64 * 1024
"""Far above any PEM RSA key; a larger file is not one."""
_APP_SETTINGS = "CONTEXTMESH_GITHUB_APP_ID and CONTEXTMESH_GITHUB_APP_KEY_FILE"


def installation_key(app_id: int, installation_id: int) -> str:
    """The installation's name in logs, lanes and the budget bucket: stable across token
    rotations (GitHub counts an installation's rate limit per installation), and 16 hex
    digits like a personal token's id."""
    return hashlib.sha256(
        f"github-app:{app_id}:installation:{installation_id}".encode()
    ).hexdigest()[:16]


@dataclass(frozen=True)
class MintedToken:
    token: str = field(repr=False)
    expires_at: float
    """Epoch seconds."""


class GithubApp:
    """The App: its id, its key file and the API it mints on. `clock` (epoch seconds) judges
    how long a token has left (tests move it); the JWT always takes the real time, since
    GitHub checks it against its own."""

    def __init__(
        self,
        app_id: int | None,
        key_file: Path | None,
        api_url: str,
        *,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app_id = app_id
        self.key_file = key_file
        self.api_url = api_url.rstrip("/")
        self.refresh_margin_s = refresh_margin_s
        self.clock = clock

    def __repr__(self) -> str:
        return f"GithubApp(app_id={self.app_id}, key_file={str(self.key_file)!r})"

    def jwt(self) -> str:
        """A fresh App JWT; SourceError naming the setting to fix when there is no usable key."""
        if self.app_id is None or self.key_file is None:
            raise SourceError(f"no GitHub App is configured: set {_APP_SETTINGS}", transient=False)
        now = int(time.time())
        payload = {
            "iat": now - JWT_BACKDATE_S,
            "exp": now + JWT_LIFETIME_S,
            "iss": str(self.app_id),
        }
        return jwt.encode(payload, _read_key(self.key_file), algorithm="RS256")

    async def mint(self, client: httpx.AsyncClient, installation_id: int) -> MintedToken:
        """A new token for the installation (one POST)."""
        url = f"{self.api_url}/app/installations/{installation_id}/access_tokens"
        reply = await _send(client, "POST", url, self.jwt(), installation_id)
        if reply.status_code == 201:
            return _minted(reply, installation_id)
        raise _refused(reply, installation_id, "mint a token for", self.app_id)

    async def account(self, client: httpx.AsyncClient, installation_id: int) -> str | None:
        """The login (lower case) of the account the App is installed on."""
        url = f"{self.api_url}/app/installations/{installation_id}"
        reply = await _send(client, "GET", url, self.jwt(), installation_id)
        if reply.status_code != 200:
            raise _refused(reply, installation_id, "look up", self.app_id)
        try:
            login = json.loads(reply.content)["account"]["login"]
        except (ValueError, KeyError, TypeError):
            return None
        return login.lower() if isinstance(login, str) else None


def _read_key(key_file: Path) -> RSAPrivateKey:
    where = f"GitHub App key file {key_file} (CONTEXTMESH_GITHUB_APP_KEY_FILE)"
    try:
        if key_file.stat().st_size > MAX_KEY_BYTES:
            raise SourceError(f"{where} is too large to be a PEM key", transient=False)
        data = key_file.read_bytes()
    except OSError as exc:
        # The error names the file and what went wrong, never its content.
        raise SourceError(
            f"{where} is unreadable ({type(exc).__name__}): mount the App's private key there",
            transient=False,
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None  # cryptography's message may quote the data: never pass it on
    if not isinstance(key, RSAPrivateKey):
        raise SourceError(
            f"{where} holds no unencrypted RSA private key in PEM: download the App's "
            "private key from its GitHub settings and mount it as is",
            transient=False,
        )
    return key


async def _send(
    client: httpx.AsyncClient, method: str, url: str, app_jwt: str, installation_id: int
) -> httpx.Response:
    try:
        return await client.request(method, url, headers=_headers(app_jwt), follow_redirects=False)
    except httpx.HTTPError as exc:
        raise SourceError(
            f"GitHub App installation {installation_id}: request failed ({type(exc).__name__})",
            transient=True,
        ) from None


class Installation:
    """One installation's current token, shared by every request of the process."""

    def __init__(self, app: GithubApp, installation_id: int) -> None:
        self.app = app
        self.installation_id = installation_id
        self.key = installation_key(app.app_id or 0, installation_id)
        self._current: MintedToken | None = None
        self._minting = asyncio.Lock()
        self._account: str | None = None

    def __repr__(self) -> str:
        return f"Installation(id={self.installation_id}, key='{self.key}')"

    @property
    def current(self) -> str | None:
        """The token requests are sent with now, if one was minted (for scrubbing errors)."""
        return self._current.token if self._current else None

    async def token(self, client: httpx.AsyncClient) -> str:
        """A token good for more than the refresh margin; mints when there is none."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        async with self._minting:
            fresh = self._fresh()  # minted while this request waited
            if fresh is not None:
                return fresh
            self._current = await self.app.mint(client, self.installation_id)
            log.info(
                "minted a GitHub App token for installation %d (%s)",
                self.installation_id,
                self.key,
            )
            return self._current.token

    def refused(self, token: str) -> None:
        """GitHub refused `token` (401) before its expiry: forget it, unless a newer token
        already replaced it, so the next token() mints at once."""
        if self._current is not None and self._current.token == token:
            self._current = None
            log.warning(
                "GitHub refused the token of installation %d (%s) before its expiry",
                self.installation_id,
                self.key,
            )

    async def account(self, client: httpx.AsyncClient) -> str | None:
        if self._account is None:
            self._account = await self.app.account(client, self.installation_id)
        return self._account

    def _fresh(self) -> str | None:
        current = self._current
        if current is None or current.expires_at - self.app.clock() <= self.app.refresh_margin_s:
            return None
        return current.token


def _headers(app_jwt: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {app_jwt}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "contextmesh-syncsvc",
    }


def _minted(reply: httpx.Response, installation_id: int) -> MintedToken:
    try:
        doc = json.loads(reply.content)
        token, expires = doc["token"], doc["expires_at"]
        expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SourceError(
            f"GitHub's answer minting a token for App installation {installation_id} "
            "is not a token and its expiry",
            transient=True,
        ) from None
    if not isinstance(token, str) or not token:
        raise SourceError(
            f"GitHub minted no token for App installation {installation_id}", transient=True
        )
    return MintedToken(token, expires_at)


def _refused(
    reply: httpx.Response, installation_id: int, doing: str, app_id: int | None
) -> SourceError:
    """The error for a non-success answer to a JWT request; GitHub's text is left out (it
    is not needed to say what to fix, and nothing it might echo can leak)."""
    status = reply.status_code
    what = f"GitHub App {app_id} could not {doing} installation {installation_id} (HTTP {status})"
    if status == 401:
        return SourceError(
            f"{what}: GitHub refused the App's JWT; check {_APP_SETTINGS} (the key must be "
            "this App's current private key) and the host's clock",
            transient=False,
        )
    if status == 404:
        return SourceError(
            f"{what}: no such installation of this App; fix the user's entry in the "
            "credential store (installation:<id>) or install the App on the account",
            transient=False,
        )
    if status == 403:
        return SourceError(
            f"{what}: GitHub forbade it (installation suspended?); check the App's "
            "installation on the account",
            transient=False,
        )
    return SourceError(f"{what}", transient=status >= 500 or status == 429)
