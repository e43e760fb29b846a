"""Tracing: W3C trace context carried from a gRPC request through every JetStream task.

The gateway's gRPC server is instrumented (opentelemetry-instrumentation-grpc); publishes
inject `traceparent` into the NATS headers and workers continue the trace from them, so one
refresh is one trace across services. The SDK is installed only when an exporter is
configured (CONTEXTMESH_TRACE_CONSOLE=1 prints spans): without one, spans are the API's
no-op spans, so the instrumentation costs next to nothing on the request path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context, propagate, trace

__all__ = ["extract_context", "init_tracing", "inject_headers", "tracer", "tracing_enabled"]

_initialised = False


def tracing_enabled() -> bool:
    """Whether spans go anywhere: only then are the SDK and the gRPC instrumentation worth
    their cost on the request path."""
    return os.environ.get("CONTEXTMESH_TRACE_CONSOLE") == "1"


def init_tracing(service: str) -> None:
    """Install the SDK tracer provider once per process, when tracing is enabled."""
    global _initialised
    if _initialised or not tracing_enabled():
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _initialised = True


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to outgoing NATS headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context a message carried, to continue its trace."""
    return propagate.extract(dict(headers or {}))
