"""What a GitHub webhook delivery says: is it GitHub's, and what should it refresh.

Pure functions over the raw body and headers, no I/O: `verify` checks the body's
X-Hub-Signature-256 (an HMAC-SHA256 of the exact bytes under the webhook's secret, compared
in constant time), and `read_event` turns an event into what contextmesh does about it:

    push                                     refresh the owner, re-syncing the repository
    repository created, deleted, renamed,    refresh the owner: discovery lists its
      publicized, privatized                 repositories again (no name to re-sync)
    ping                                     answer it; nothing else
    anything else                            ignored

Refusals raise the domain errors the gateway maps to statuses: Unauthenticated (401) for a
signature that is missing or does not verify, InvalidArgument (400) for a body that is too
large, not JSON, or names no usable owner or repository.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

import protovalidate
from contextmesh.gateway.v1 import bundle_service_pb2

from meshkit.auth import Unauthenticated
from meshkit.rpc import InvalidArgument
from meshkit.validation import describe_violations

__all__ = [
    "MAX_BODY_BYTES",
    "REFRESHING_ACTIONS",
    "Event",
    "check_delivery_id",
    "check_size",
    "read_event",
    "verify",
]

MAX_BODY_BYTES = 512 * 1024
"""The largest delivery read. GitHub caps payloads at 25 MB, but a push names at most 20
commits and is a few KiB to a few tens of KiB; the bound keeps one caller from making the
gateway hash and parse megabytes. Envoy's webhook route passes twice this, so a body just
over it gets this 400 with a message rather than Envoy's bare 413."""
REFRESHING_ACTIONS = frozenset({"created", "deleted", "renamed", "publicized", "privatized"})
"""Actions of the `repository` event that change what discovery lists."""
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
"""GitHub's delivery ids are GUIDs; the id becomes a KV key, so nothing else is let in."""
_REPOSITORY = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class Event:
    """What a delivery asks for: nothing (`user` empty), or a refresh of `user` that fetches
    `resync` again whatever their fingerprint says."""

    kind: str
    """The X-GitHub-Event header: push, repository, ping, ..."""
    user: str = ""
    resync: tuple[str, ...] = ()

    @property
    def refreshes(self) -> bool:
        return bool(self.user)


def check_size(body: bytes) -> None:
    """InvalidArgument when the body is over MAX_BODY_BYTES (checked before it is hashed)."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidArgument(
            f"the body is {len(body)} bytes; deliveries over {MAX_BODY_BYTES} bytes are refused"
        )


def verify(secret: str, body: bytes, signature: str | None) -> None:
    """Raise Unauthenticated unless `signature` is `sha256=<hex>` of the body's HMAC."""
    if not signature:
        raise Unauthenticated(
            "missing X-Hub-Signature-256: set the webhook's secret on GitHub to the gateway's "
            "CONTEXTMESH_GITHUB_WEBHOOK_SECRET"
        )
    found = _SIGNATURE.match(signature.strip())
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if found is None or not hmac.compare_digest(found.group(1).lower(), expected):
        raise Unauthenticated(
            "X-Hub-Signature-256 does not match the body: the webhook's secret differs from "
            "CONTEXTMESH_GITHUB_WEBHOOK_SECRET, or the body was changed on the way"
        )


def check_delivery_id(delivery: str | None) -> str:
    """The X-GitHub-Delivery id, or InvalidArgument when it is missing or malformed."""
    if not delivery or not _DELIVERY_ID.match(delivery):
        raise InvalidArgument(
            "X-GitHub-Delivery must be the delivery's id (a GUID: letters, digits and "
            "hyphens, at most 64)"
        )
    return delivery


def read_event(kind: str | None, body: bytes) -> Event:
    """What the delivery of event `kind` with this body asks contextmesh to do."""
    if not kind:
        raise InvalidArgument("X-GitHub-Event is missing: it names the event (push, ping, ...)")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(
            "the body is not JSON: set the webhook's content type to application/json"
        ) from None
    if not isinstance(payload, dict):
        raise InvalidArgument("the body must be a JSON object, as GitHub sends")
    if kind == "push":
        user, repository = _repository(payload)
        return Event(kind, user, (repository,))
    if kind == "repository" and payload.get("action") in REFRESHING_ACTIONS:
        user, _ = _repository(payload)
        return Event(kind, user)
    return Event(kind)


def _repository(payload: dict[str, Any]) -> tuple[str, str]:
    """The owner and full name of the payload's repository, both checked."""
    repository = payload.get("repository")
    if not isinstance(repository, dict):
        raise InvalidArgument("the body has no 'repository' object")
    owner = repository.get("owner")
    owner = owner if isinstance(owner, dict) else {}
    user = owner.get("login") or owner.get("name")
    full_name = repository.get("full_name")
    if not isinstance(user, str) or not user:
        raise InvalidArgument("repository.owner has neither 'login' nor 'name'")
    try:
        protovalidate.validate(bundle_service_pb2.RefreshBundleRequest(user=user))
    except protovalidate.ValidationError as exc:
        raise InvalidArgument(f"repository.owner: {describe_violations(exc)}") from None
    if (
        not isinstance(full_name, str)
        or not _REPOSITORY.match(full_name)
        or full_name.split("/")[0].lower() != user.lower()
    ):
        raise InvalidArgument(
            "repository.full_name must be the repository's owner/name, its owner's name first"
        )
    return user, full_name
