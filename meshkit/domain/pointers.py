"""The per-user pointers in KV (cm_bundles, cm_models): read as protobuf messages.

Every service reads them (the gateway and discovery the bundle pointer, search and training
both), and each used to unwrap the KV entry by hand. A missing, deleted or empty entry reads
as no pointer; the revision comes along for compare-and-set writers.

A pointer of user X must name blob keys under X's own prefix (bundles/X/, models/X/). One that
does not was not written by mergesvc or trainsvc (they derive keys from the user); it is what a
writer with stolen NATS access would leave to serve X another user's data. Readers ignore it
with a warning (the gateway refuses it, meshkit has `bundle_pointer_problem` for that).
"""

from __future__ import annotations

import logging
from typing import TypeVar

from contextmesh.bundle.v1 import bundle_pb2
from google.protobuf.message import Message
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

__all__ = [
    "bundle_pointer_problem",
    "model_pointer_problem",
    "read_bundle_pointer",
    "read_message",
    "read_model_pointer",
]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


def _outside(prefix: str, keys: dict[str, str]) -> str | None:
    wrong = sorted(name for name, key in keys.items() if key and not key.startswith(prefix))
    if not wrong:
        return None
    return f"{' and '.join(wrong)} outside {prefix}"


def bundle_pointer_problem(pointer: bundle_pb2.BundlePointer, user: str) -> str | None:
    """Why this pointer cannot be user's (its keys lie outside bundles/<user>/), else None."""
    return _outside(
        f"bundles/{user}/",
        {"bundle.blob_key": pointer.bundle.blob_key, "index_key": pointer.index_key},
    )


def model_pointer_problem(pointer: bundle_pb2.ModelPointer, user: str) -> str | None:
    """Why this pointer cannot be user's (its keys lie outside models/<user>/), else None."""
    return _outside(
        f"models/{user}/",
        {"model_key": pointer.model_key, "embeddings_key": pointer.embeddings_key},
    )


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
    if pointer is None or not pointer.bundle.content_hash:
        return None
    problem = bundle_pointer_problem(pointer, user)
    if problem is not None:
        log.warning("ignoring the bundle pointer of %r: it names %s", user, problem)
        return None
    return pointer


async def read_model_pointer(
    models: KeyValue, user: str
) -> tuple[bundle_pb2.ModelPointer | None, int | None]:
    """The user's model pointer and its revision (a foreign pointer reads as none, with its
    revision, so trainsvc's next compare-and-set replaces it)."""
    pointer, revision = await read_message(models, user, bundle_pb2.ModelPointer)
    problem = model_pointer_problem(pointer, user) if pointer is not None else None
    if problem is not None:
        log.warning("ignoring the model pointer of %r: it names %s", user, problem)
        return None, revision
    return pointer, revision
