"""The per-user pointers in KV (cm_bundles, cm_models): read as protobuf messages.

Every service reads them (the gateway and discovery the bundle pointer, search and training
both), and each used to unwrap the KV entry by hand. A missing, deleted or empty entry reads
as no pointer; the revision comes along for compare-and-set writers.
"""

from __future__ import annotations

from typing import TypeVar

from contextmesh.bundle.v1 import bundle_pb2
from google.protobuf.message import Message
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

__all__ = ["read_bundle_pointer", "read_message", "read_model_pointer"]

M = TypeVar("M", bound=Message)


async def read_message(kv: KeyValue, key: str, kind: type[M]) -> tuple[M | None, int | None]:
    """The message under key and the entry's revision: (None, None) when there is no entry,
    (None, revision) when it is empty."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, None
    if entry is None:
        return None, None
    if not entry.value:
        return None, entry.revision
    message = kind()
    message.ParseFromString(entry.value)
    return message, entry.revision


async def read_bundle_pointer(bundles: KeyValue, user: str) -> bundle_pb2.BundlePointer | None:
    """The user's latest bundle, None before their first merge."""
    pointer, _ = await read_message(bundles, user, bundle_pb2.BundlePointer)
    return pointer if pointer is not None and pointer.bundle.content_hash else None


async def read_model_pointer(
    models: KeyValue, user: str
) -> tuple[bundle_pb2.ModelPointer | None, int | None]:
    """The user's model pointer and its revision."""
    return await read_message(models, user, bundle_pb2.ModelPointer)
