"""Binding without declaring: wait until the streams and buckets a service uses exist.

With locked-down NATS (meshkit.nats_auth) services may not create or update streams; a
privileged step (`contextmesh up`, the Kubernetes declare Job) declares them. A service that
starts first waits here, saying what it waits for, instead of failing on its first bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from meshkit.nats_auth import IDENTITIES

__all__ = ["await_topology"]

log = logging.getLogger(__name__)


async def await_topology(
    js: JetStreamContext, user: str | None, stop: asyncio.Event, *, poll_s: float = 1.0
) -> None:
    """Return once every stream of the identity `user` exists (or `stop` is set); without a
    known identity there is nothing to check and binding reports what is missing."""
    identity = IDENTITIES.get(user or "")
    if identity is None:
        return
    missing = list(identity.streams)
    while missing and not stop.is_set():
        name = missing[0]
        try:
            await js.stream_info(name)
        except NotFoundError:
            log.warning("stream %s is not declared yet; waiting for the declare step", name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
            continue
        missing.pop(0)
