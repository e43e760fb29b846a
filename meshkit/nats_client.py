"""Connecting to NATS the same way in every process: TLS, credentials, endless reconnects."""

from __future__ import annotations

import asyncio
import logging
import ssl

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from meshkit.config import NatsSettings

__all__ = ["connect"]

log = logging.getLogger(__name__)


async def connect(settings: NatsSettings, *, name: str) -> tuple[Client, JetStreamContext]:
    """Connect, retrying until the server answers; then reconnect forever on loss."""
    tls = None
    if settings.tls_ca_file:
        tls = ssl.create_default_context(cafile=settings.tls_ca_file)
        if settings.tls_cert_file and settings.tls_key_file:
            tls.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)

    async def on_error(exc: Exception) -> None:
        # Without an error callback nats-py prints reconnect tracebacks (toolchain.md).
        log.warning("nats: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats: disconnected")

    async def on_reconnect() -> None:
        log.info("nats: reconnected")

    delay = 0.2
    while True:
        try:
            nc = await nats.connect(
                servers=[s.strip() for s in settings.url.split(",") if s.strip()],
                name=name,
                tls=tls,
                user_credentials=settings.creds_file,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                allow_reconnect=True,
            )
            return nc, nc.jetstream(timeout=10)
        except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
            log.warning("nats: cannot connect to %s yet (%s); retrying", settings.url, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
