"""Identifiers: job ids and the Nats-Msg-Id of every task.

Job ids are ULIDs (26 characters of Crockford base32): sortable by creation time, safe in KV
keys, blob keys and URLs. Message ids are derived from job and task identity, never random,
so a duplicate publish of the same task is dropped by JetStream's duplicate window.
"""

from __future__ import annotations

import os
import time

__all__ = [
    "discover_msg_id",
    "merge_msg_id",
    "new_job_id",
    "notify_msg_id",
    "notify_redrive_msg_id",
    "sync_msg_id",
    "train_msg_id",
]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_job_id(now: float | None = None) -> str:
    """A new ULID: 48 bits of milliseconds then 80 random bits."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def discover_msg_id(job_id: str) -> str:
    return f"discover:{job_id}"


def sync_msg_id(job_id: str, index: int) -> str:
    return f"sync:{job_id}:{index}"


def merge_msg_id(job_id: str) -> str:
    return f"merge:{job_id}"


def train_msg_id(job_id: str) -> str:
    return f"train:{job_id}"


def notify_msg_id(job_id: str) -> str:
    """The notification of a job's end; also the delivery id its receiver sees."""
    return f"notify:{job_id}"


def notify_redrive_msg_id(job_id: str, sequence: int) -> str:
    """A redrive of the notification parked as dead letter `sequence`: a delivery of its own."""
    return f"notify:{job_id}:redrive:{sequence}"
