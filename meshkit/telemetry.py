"""Tracing: W3C trace context carried from a gRPC request through every JetStream task.

The gateway's gRPC server is instrumented (opentelemetry-instrumentation-grpc), and so are
the CLI's and the gateway's client channels; publishes open a PRODUCER span and inject its
`traceparent` into the NATS headers, and workers continue the trace from them in a CONSUMER
span, so one refresh is one trace across services (a redelivery carries the same headers,
hence lands in the same trace).

Export is configured the OpenTelemetry way: OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) turns on OTLP export, batched; OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER(_ARG), OTEL_EXPORTER_OTLP_HEADERS and OTEL_BSP_* are read by the SDK.
CONTEXTMESH_TRACE_CONSOLE=1 prints spans instead, for a developer. With neither, the SDK is
not even imported: spans are the API's no-op spans and cost next to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import Message
from opentelemetry import context, propagate, trace

from meshkit.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "aio_client_interceptors",
    "build_tracer_provider",
    "extract_context",
    "init_tracing",
    "inject_headers",
    "shutdown_tracing",
    "task_attributes",
    "trace_channel",
    "tracer",
    "tracing_enabled",
]

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOL_VARS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
_SUPPORTED_PROTOCOL = "http/protobuf"

_provider: TracerProvider | None = None


def _otlp_configured() -> bool:
    return any(os.environ.get(name) for name in _ENDPOINT_VARS)


def tracing_enabled() -> bool:
    """Whether spans go anywhere: only then are the SDK and the gRPC instrumentation worth
    their cost on the request path."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return os.environ.get("CONTEXTMESH_TRACE_CONSOLE") == "1" or _otlp_configured()


def build_tracer_provider(service: str) -> TracerProvider | None:
    """The SDK provider the environment asks for, or None when tracing is off.

    service names the process unless OTEL_SERVICE_NAME says otherwise; the sampler is the
    SDK's reading of OTEL_TRACES_SAMPLER (default: parent-based, always on)."""
    if not tracing_enabled():
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    name = os.environ.get("OTEL_SERVICE_NAME") or service
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    if _otlp_configured():
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    if os.environ.get("CONTEXTMESH_TRACE_CONSOLE") == "1":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def _otlp_exporter() -> OTLPSpanExporter:
    for variable in _PROTOCOL_VARS:
        protocol = os.environ.get(variable)
        if protocol:
            if protocol != _SUPPORTED_PROTOCOL:
                raise ConfigError(
                    variable,
                    f"{protocol!r} is not supported: traces are exported over "
                    f"{_SUPPORTED_PROTOCOL} (the collector's HTTP port, 4318 by default)",
                )
            break
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The exporter reads the endpoint, headers, timeout and compression variables itself.
    return OTLPSpanExporter()


def init_tracing(service: str) -> None:
    """Install the SDK tracer provider once per process, when tracing is enabled."""
    global _provider
    if _provider is not None:
        return
    _provider = build_tracer_provider(service)
    if _provider is not None:
        trace.set_tracer_provider(_provider)


def shutdown_tracing() -> None:
    """Export what the batch still holds; a process calls this once, as it exits."""
    if _provider is not None:
        _provider.shutdown()


def task_attributes(task: Message) -> dict[str, str]:
    """Span attributes naming a task's job and user (never its payload: no file contents,
    no tokens)."""
    attributes = {}
    meta = getattr(task, "meta", None)
    if meta is not None and meta.job_id:
        attributes["contextmesh.job_id"] = meta.job_id
    user = getattr(task, "user", None)
    if isinstance(user, str) and user:
        attributes["contextmesh.user"] = user
    return attributes


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to outgoing NATS headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context a message carried, to continue its trace."""
    return propagate.extract(dict(headers or {}))


def aio_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that give an asyncio channel's calls client spans carrying the trace
    context to the server; none when tracing is off."""
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors as interceptors

    return list(interceptors())


def trace_channel(channel: grpc.Channel) -> grpc.Channel:
    """A blocking channel whose calls carry the trace context (unchanged when tracing is
    off)."""
    if not tracing_enabled():
        return channel
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    # The instrumentation's interceptor has its own interface: grpc.intercept_channel
    # refuses it.
    traced: grpc.Channel = intercept_channel(channel, client_interceptor())
    return traced
