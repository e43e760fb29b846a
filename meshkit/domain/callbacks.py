"""Users' callback URLs (cm_callbacks): what a URL must be, and the store of URL and secret.

A callback receives a signed POST when a job of its user ends (notifysvc). A URL that names
an address inside the mesh's network would let any user make contextmesh call it, so the
rules are checked twice: here when the URL is set, on the URL as written, and by notifysvc
before every POST, on the addresses the host resolves to then (DNS can change after the URL
was accepted).

- https only, except on a loopback host (127.0.0.1, [::1], localhost), where http is allowed
  for local use and tests;
- no user name or password in the URL (it would sit in the bucket and in logs);
- a host written as an address must be a public one: private, link-local, loopback (outside
  the exception above), multicast and reserved addresses are refused;
- resolved addresses follow the same rule, and loopback ones are allowed only when the URL
  itself named a loopback host.

Setting a callback generates its signing secret, returned once (SetCallback) and kept in the
bucket for notifysvc; setting it again rotates the secret.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from contextmesh.notify.v1 import callback_pb2
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from meshkit.domain.pointers import read_message
from meshkit.rpc import InvalidArgument, NotFound
from meshkit.topology import Buckets

__all__ = [
    "CallbackNotFoundError",
    "CallbackStore",
    "CallbackTarget",
    "CallbackUrlError",
    "IPAddress",
    "address_problem",
    "parse_callback_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK_NAMES = frozenset({"localhost"})
SECRET_BYTES = 32


class CallbackUrlError(InvalidArgument):
    """A callback URL the rules refuse (INVALID_ARGUMENT); the message says why."""


class CallbackNotFoundError(NotFound):
    """The user has no callback (NOT_FOUND)."""

    def __init__(self, user: str) -> None:
        super().__init__(f"user {user} has no callback; set one with SetCallback")


@dataclass(frozen=True)
class CallbackTarget:
    """A callback URL that passed the rules, taken apart for sending."""

    url: str
    scheme: str
    host: str
    """Without brackets for an IPv6 address, lower case."""
    port: int
    loopback: bool
    """The URL names a loopback host: http is allowed, and so are loopback addresses."""


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_problem(address: IPAddress, *, loopback_allowed: bool) -> str | None:
    """Why a callback may not go to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if loopback_allowed else f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_private or not address.is_global:
        return f"{address} is a private or reserved address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    return None


def parse_callback_url(url: str) -> CallbackTarget:
    """The URL taken apart; CallbackUrlError says which rule it breaks."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackUrlError(f"callback url {url!r} is malformed: {exc}") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise CallbackUrlError(f"callback url {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise CallbackUrlError(
            "callback url must not carry a user name or password; authenticate the "
            "notifications by their X-Contextmesh-Signature-256 header instead"
        )
    literal = _literal(host)
    loopback = host in LOOPBACK_NAMES or (literal is not None and literal.is_loopback)
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise CallbackUrlError(
            f"callback url must use https (http only on a loopback host such as "
            f"127.0.0.1 or localhost); got scheme {parts.scheme!r}"
        )
    if literal is not None:
        problem = address_problem(literal, loopback_allowed=True)
        if problem is not None:
            raise CallbackUrlError(
                f"callback url must name a public host: {problem}, which contextmesh will not call"
            )
    default_port = 443 if parts.scheme == "https" else 80
    return CallbackTarget(url, parts.scheme, host, port or default_port, loopback)


class CallbackStore:
    """Reads and writes users' callbacks and their signing secrets."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> CallbackStore:
        return cls(await js.key_value(Buckets.CALLBACKS.name))

    async def set(
        self, user: str, url: str, now: float | None = None
    ) -> callback_pb2.StoredCallback:
        """Check the URL, then create or replace the user's callback with a new secret."""
        parse_callback_url(url)
        stamp = int(time.time() if now is None else now)
        stored = await self.get(user)
        callback = callback_pb2.Callback(user=user, url=url)
        if stored is not None:
            callback.create_time.CopyFrom(stored.callback.create_time)
        else:
            callback.create_time.FromSeconds(stamp)
        callback.update_time.FromSeconds(stamp)
        fresh = callback_pb2.StoredCallback(
            callback=callback, secret=secrets.token_hex(SECRET_BYTES)
        )
        await self.kv.put(user, fresh.SerializeToString(deterministic=True))
        return fresh

    async def get(self, user: str) -> callback_pb2.StoredCallback | None:
        """The user's callback and secret; None when they have none."""
        stored, _ = await read_message(self.kv, user, callback_pb2.StoredCallback)
        return stored if stored is not None and stored.callback.url else None

    async def delete(self, user: str) -> None:
        await self.kv.delete(user)
