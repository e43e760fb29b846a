"""Connecting to NATS the same way in every process: TLS, credentials, endless reconnects.

Credentials are an NKey seed file (what `contextmesh up` and the Kubernetes Secrets give each
service) or a .creds file; only their paths are in the settings and nothing here logs them. An
authorization error is not retried: the credentials will not get better, and the message says
which setting to check.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from meshkit.config import NatsSettings
from meshkit.errors import ConfigError
from meshkit.retry import NATS_CONNECT

__all__ = ["NatsAuthError", "connect"]

log = logging.getLogger(__name__)


class NatsAuthError(ConfigError):
    """The server refused this process's NATS credentials (or asked for some and none were set)."""


def _inbox(settings: NatsSettings) -> str:
    return f"_INBOX_{settings.user}" if settings.user else "_INBOX"


async def connect(settings: NatsSettings, *, name: str) -> tuple[Client, JetStreamContext]:
    """Connect, retrying under NATS_CONNECT until the server answers; then reconnect forever
    on loss."""
    seed = settings.nkey_seed_file
    tls = None
    if settings.tls_ca_file:
        tls = ssl.create_default_context(cafile=settings.tls_ca_file)
        if settings.tls_cert_file and settings.tls_key_file:
            tls.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)

    async def on_error(exc: Exception) -> None:
        # Without an error callback nats-py prints reconnect tracebacks.
        log.warning("nats: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats: disconnected")

    async def on_reconnect() -> None:
        log.info("nats: reconnected")

    options: dict[str, Any] = {
        "servers": [s.strip() for s in settings.url.split(",") if s.strip()],
        "name": name,
        "tls": tls,
        "user_credentials": settings.creds_file,
        "nkeys_seed": seed,
        "inbox_prefix": _inbox(settings),
        "error_cb": on_error,
        "connect_timeout": NATS_CONNECT.attempt_timeout_s,
    }
    failures = 0
    while True:
        try:
            # One attempt without reconnects first: with them, nats-py retries a refused
            # login forever; this way a wrong or missing key is a clear error at start.
            probe = Client()
            try:
                await probe.connect(**options, allow_reconnect=False)
            finally:
                await probe.close()  # also after a refusal: nats-py leaves the socket open
            nc = await nats.connect(
                **options,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
            )
            return nc, nc.jetstream(timeout=10)
        except (TimeoutError, OSError, nats.errors.NoServersError) as exc:
            log.warning("nats: cannot connect to %s yet (%s); retrying", settings.url, exc)
            failures += 1
            await asyncio.sleep(NATS_CONNECT.delay_s(failures))
        except nats.errors.Error as exc:
            if "authorization" not in str(exc).lower():
                raise
            raise _refused(name, seed or settings.creds_file) from None


def _refused(name: str, credentials: str | None) -> NatsAuthError:
    how = (
        "the server does not accept this key; check that the file is this service's"
        if credentials
        else "the server requires credentials and none are set"
    )
    return NatsAuthError("CONTEXTMESH_NATS_NKEY_SEED_FILE", f"NATS refused {name!r}: {how}")
