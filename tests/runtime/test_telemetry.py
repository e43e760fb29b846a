"""Tracing is configured by the standard OTEL_* variables, and costs nothing without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from meshkit.errors import ConfigError
from meshkit.telemetry import build_tracer_provider
from tests.support.otlp import Kind, OtlpReceiver

TRACING_VARS = (
    "CONTEXTMESH_TRACE_CONSOLE",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


@pytest.fixture(autouse=True)
def no_tracing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TRACING_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        for name, value in r.env().items():
            monkeypatch.setenv(name, value)
        yield r


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in TRACING_VARS}


NO_SDK_SCRIPT = """
import sys
from opentelemetry import trace
from meshkit.telemetry import init_tracing, tracer
init_tracing("svc")
with tracer("t").start_as_current_span("work") as span:
    recording = span.is_recording()
sdk = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exp")))
print(type(trace.get_tracer_provider()).__name__, recording, sdk)
"""


def test_without_otel_variables_no_provider_and_no_exporter_exist() -> None:
    assert build_tracer_provider("svc") is None
    out = subprocess.run(
        [sys.executable, "-c", NO_SDK_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    ).stdout
    assert out.split() == ["ProxyTracerProvider", "False", "[]"]


def test_an_otlp_endpoint_exports_spans_named_after_the_service(receiver: OtlpReceiver) -> None:
    provider = build_tracer_provider("syncsvc")
    assert provider is not None
    with provider.get_tracer("t").start_as_current_span("work"):
        pass
    provider.shutdown()  # what a service does as it exits: the batch is flushed
    (span,) = receiver.wait_for(lambda spans: len(spans) == 1, timeout=5)
    assert (span.service, span.name, span.kind) == ("syncsvc", "work", Kind.SPAN_KIND_INTERNAL)


def test_the_traces_endpoint_and_service_name_variables_win(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.endpoint}/v1/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sync-eu")
    provider = build_tracer_provider("syncsvc")
    assert provider is not None
    provider.get_tracer("t").start_span("work").end()
    provider.shutdown()
    (span,) = receiver.wait_for(lambda spans: len(spans) == 1, timeout=5)
    assert span.service == "sync-eu"


def test_the_sampler_variables_are_honoured(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    provider = build_tracer_provider("svc")
    assert provider is not None
    for _ in range(20):
        provider.get_tracer("t").start_span("dropped").end()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1")
    kept = build_tracer_provider("svc")
    assert kept is not None
    kept.get_tracer("t").start_span("kept").end()
    provider.shutdown()
    kept.shutdown()
    assert [s.name for s in receiver.spans] == ["kept"]


def test_an_unsupported_protocol_is_a_configuration_error(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' is not supported"):
        build_tracer_provider("svc")


LOG_SCRIPT = """
import logging
from meshkit.logging import bind_job_id, setup_logging
from meshkit.telemetry import init_tracing, tracer
setup_logging("svc")
init_tracing("svc")
log = logging.getLogger("x")
log.info("outside")
with tracer("t").start_as_current_span("task") as span:
    bind_job_id("J1")
    log.info("inside")
    ids = span.get_span_context()
    print(format(ids.trace_id, "032x"), format(ids.span_id, "016x"))
"""


def test_log_lines_inside_a_span_carry_its_ids_and_the_bound_job() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env={**clean_env(), "CONTEXTMESH_TRACE_CONSOLE": "1"},
    )
    trace_id, span_id = done.stdout.split()[:2]
    outside, inside = (json.loads(line) for line in done.stderr.splitlines())
    assert not {"trace_id", "span_id", "job_id"} & set(outside)
    assert (inside["trace_id"], inside["span_id"], inside["job_id"]) == (trace_id, span_id, "J1")


CLIENT_SPANS_SCRIPT = """
import asyncio, json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from meshkit.blob.retry import ErrorModel, Fault, call
from meshkit.errors import BlobError
from meshkit.retry import BLOB_CALL
import dataclasses

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
policy = dataclasses.replace(BLOB_CALL, attempts=3, base_delay_s=0.001, max_delay_s=0.001)
errors = ErrorModel(classify=lambda exc: Fault.TRANSIENT, describe=lambda exc: "reset")
tries = []

async def flaky():
    tries.append(1)
    if len(tries) < 3:
        raise ConnectionError("https://acct/blob?sig=SECRET")
    return b"x"

async def main():
    await call(flaky, policy=policy, errors=errors, what="azure download 'a/b'", key="a/b")
    tries.clear()
    try:
        await call(flaky, policy=dataclasses.replace(policy, attempts=2), errors=errors,
                   what="azure upload 'c'", key="c")
    except BlobError:
        pass

asyncio.run(main())
print(json.dumps([
    [s.name, s.kind.name, dict(s.attributes), s.status.status_code.name, s.to_json()]
    for s in exporter.get_finished_spans()
]))
"""


def test_a_blob_call_is_one_client_span_whatever_its_retries() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT_SPANS_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(),
    ).stdout
    spans = json.loads(out)
    assert [span[:4] for span in spans] == [
        ["blob azure download", "CLIENT", {"contextmesh.blob.key": "a/b"}, "UNSET"],
        ["blob azure upload", "CLIENT", {"contextmesh.blob.key": "c"}, "ERROR"],
    ]
    assert "SECRET" not in out  # the SDK's error text, with its signed URL, is not recorded
