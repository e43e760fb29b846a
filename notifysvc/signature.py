"""The headers that let a receiver trust a notification and recognise a repeat.

    X-Contextmesh-Signature-256: sha256=<hex HMAC-SHA256 of the body, keyed by the secret>
    X-Contextmesh-Delivery:      the delivery id, the same on every retry of one delivery
    X-Contextmesh-Event:         job.ended

The receiver computes the HMAC of the raw body with the secret SetCallback returned and
compares it in constant time; docs/rest.md shows it in a few lines of Python.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "JOB_ENDED",
    "SIGNATURE_HEADER",
    "notification_headers",
    "signature",
]

SIGNATURE_HEADER = "X-Contextmesh-Signature-256"
DELIVERY_HEADER = "X-Contextmesh-Delivery"
EVENT_HEADER = "X-Contextmesh-Event"
JOB_ENDED = "job.ended"


def signature(secret: str, body: bytes) -> str:
    """The signature header's value for body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notification_headers(secret: str, body: bytes, delivery_id: str) -> dict[str, str]:
    """Every header of a notification whose body is `body`."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "contextmesh-notify/1",
        EVENT_HEADER: JOB_ENDED,
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: signature(secret, body),
    }
