"""Running a service process the same way everywhere.

`run_service(name, body)` reads Settings, sets up logging and tracing (meshkit.telemetry;
its last spans are flushed on exit), serves Prometheus metrics when CONTEXTMESH_METRICS_PORT
is set (meshkit.metrics), connects to NATS, declares the topology (or, with
CONTEXTMESH_NATS_DECLARE off, waits until a privileged step has declared what its NATS
identity uses), watches how full those streams are (an error line
past CONTEXTMESH_CAPACITY_WARN; meshkit/capacity.py), and runs `body(ctx)` until SIGTERM or
SIGINT sets `ctx.stop`; then it drains the NATS connection so nothing acknowledged is lost. While it
runs, health (when the service has a gRPC server, or CONTEXTMESH_HEALTH_ADDR is set for a
worker) follows the NATS connection: NOT_SERVING while disconnected or draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from nats.aio.client import Client
from nats.js import JetStreamContext

from meshkit.capacity import CapacityWatch
from meshkit.config import Settings
from meshkit.errors import ConfigError
from meshkit.logging import setup_logging
from meshkit.metrics import serve_metrics
from meshkit.nats_client import connect
from meshkit.rpc import ServerBundle, create_server
from meshkit.telemetry import init_tracing, shutdown_tracing
from meshkit.topology import declare_as_configured
from meshkit.topology_check import await_topology

__all__ = ["ServiceContext", "follow_nats_health", "run_service"]

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What a running service gets: settings, NATS, and the event that asks it to stop."""

    name: str
    settings: Settings
    nc: Client
    js: JetStreamContext
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    servers: list[ServerBundle] = field(default_factory=list)


async def follow_nats_health(ctx: ServiceContext, bundle: ServerBundle) -> None:
    """Keep a server's health in step with the NATS connection until the service stops."""
    serving: bool | None = None
    while not ctx.stop.is_set():
        now = ctx.nc.is_connected
        if now != serving:
            await bundle.set_serving(now)
            serving = now
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), 0.5)
    await bundle.set_serving(False)


async def _serve_health(ctx: ServiceContext, address: str) -> None:
    bundle = create_server(address, [], auth=None, validate=False, trace=False)
    await bundle.server.start()
    ctx.servers.append(bundle)
    try:
        await follow_nats_health(ctx, bundle)
    finally:
        await bundle.server.stop(1)


def _serve_metrics(settings: Settings) -> WSGIServer | None:
    """The /metrics endpoint, when CONTEXTMESH_METRICS_PORT asks for one."""
    if not settings.metrics_port:
        return None
    try:
        return serve_metrics(settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise ConfigError(
            "CONTEXTMESH_METRICS_PORT",
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}",
        ) from None


async def _main(name: str, body: Callable[[ServiceContext], Awaitable[None]]) -> None:
    settings = Settings.from_env()
    setup_logging(
        name, level=settings.log_level, fmt=settings.log_format, secrets=[settings.github.token]
    )
    init_tracing(name)
    metrics = _serve_metrics(settings)
    nc, js = await connect(settings.nats, name=name)
    ctx = ServiceContext(name, settings, nc, js)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ctx.stop.set)
    try:
        if settings.nats.declare:
            await declare_as_configured(js, settings)
        else:
            await await_topology(js, settings.nats.user, ctx.stop)
        health_task = (
            asyncio.create_task(_serve_health(ctx, settings.health_addr))
            if settings.health_addr
            else None
        )
        capacity = CapacityWatch.for_identity(js, settings.nats, settings.nats.user)
        capacity_task = asyncio.create_task(capacity.run(ctx.stop))
        log.info("%s started", name)
        await body(ctx)
        ctx.stop.set()
        await capacity_task
        if health_task:
            await health_task
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        log.info("%s stopped", name)
        # After the drain, so spans of the last tasks are in the batch this flushes.
        shutdown_tracing()
        if metrics is not None:
            metrics.shutdown()


def run_service(name: str, body: Callable[[ServiceContext], Awaitable[None]]) -> None:
    """Entry point of a service's __main__: exits 2 with a clear line on bad configuration."""
    try:
        asyncio.run(_main(name, body))
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
