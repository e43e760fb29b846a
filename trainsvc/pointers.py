"""The user's model pointer (cm_models), moved with compare-and-set, never backwards.

A model pointer only ever moves to a model of the user's LATEST bundle (the cm_bundles
pointer). The order of reads makes that hold under races: read the model pointer (and its
revision), then the bundle pointer, then write with `last=revision`. A newer bundle's trainer
publishes only after the bundle pointer moved; if it published before our model-pointer read,
our bundle-pointer read already sees the newer bundle and we stop; if after, its write changed
the revision and our write fails, we re-read and stop.
"""

from __future__ import annotations

import logging

from contextmesh.bundle.v1 import bundle_pb2
from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from meshkit.blob import BlobStore
from meshkit.blob.base import delete_prefix
from meshkit.domain.pointers import read_bundle_pointer, read_model_pointer
from meshkit.erasure import purge, read_now
from meshkit.errors import ConflictError
from meshkit.topology import Buckets

__all__ = ["latest_bundle_hash", "move_model_pointer", "take_back_model"]

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 50


async def latest_bundle_hash(bundles: KeyValue, user: str) -> str | None:
    """The content hash of the user's latest bundle, None when the user has none."""
    pointer = await read_bundle_pointer(bundles, user)
    return pointer.bundle.content_hash if pointer is not None else None


async def move_model_pointer(
    models: KeyValue, bundles: KeyValue, user: str, pointer: bundle_pb2.ModelPointer
) -> bool:
    """Point the user's model pointer at pointer if its bundle is still the latest.

    Returns True when the pointer holds this model afterwards, False when a newer bundle has
    replaced pointer's bundle (its own training will publish).
    """
    value = pointer.SerializeToString(deterministic=True)
    for _ in range(_MAX_ATTEMPTS):
        current, revision = await read_model_pointer(models, user)
        latest = await latest_bundle_hash(bundles, user)
        if latest is not None and latest != pointer.bundle_hash:
            return False
        if current is not None and _same_model(current, pointer):
            return True
        try:
            if revision is None:
                await models.create(user, value)
            else:
                await models.update(user, value, last=revision)
            return True
        except KeyWrongLastSequenceError:
            continue
    raise ConflictError(f"could not move the model pointer of {user!r}: too many races")


def _same_model(a: bundle_pb2.ModelPointer, b: bundle_pb2.ModelPointer) -> bool:
    return (a.bundle_hash, a.model_key, a.tuned) == (b.bundle_hash, b.model_key, b.tuned)


async def take_back_model(js: JetStreamContext, blobs: BlobStore, user: str, prefix: str) -> None:
    """Undo a training whose job was forgotten meanwhile: the files under prefix, and the
    user's model pointer if it names them."""
    found = await read_now(js, Buckets.MODELS, user)
    if found is not None and bundle_pb2.ModelPointer.FromString(found[0]).model_key.startswith(
        prefix
    ):
        await purge(js, Buckets.MODELS, user)
    await delete_prefix(blobs, prefix)
