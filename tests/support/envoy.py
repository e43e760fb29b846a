"""Envoy for tests: a REST proxy in front of any gRPC server, and what it says over HTTP/1.1.

`rest_proxy` renders the project's Envoy config (meshctl.envoy) for an upstream address and
runs real Envoy on a free port, so the same tests run against the stub gateway or the real
one. `http_rules` lists the REST routes the contracts declare, to check that every RPC is
covered. `get_with_trailers` reads a response with its HTTP/1.1 trailers, which httpx drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import h11
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from meshctl.envoy import (
    EnvoyProcess,
    envoy_binary,
    render_envoy_config,
    start_envoy,
    transcoded_services,
)

__all__ = [
    "DESCRIPTOR_PATH",
    "HttpRule",
    "RawResponse",
    "RestProxy",
    "envoy_validate",
    "get_with_trailers",
    "http_rules",
    "rest_proxy",
]

DESCRIPTOR_PATH = (
    pathlib.Path(__file__).resolve().parents[2] / "gen" / "contextmesh" / "contextmesh.binpb"
)
"""The descriptor image tools/gen_contracts.py writes; Envoy transcodes with it."""


def envoy_validate(config: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Run the real Envoy's own check of a config file (`--mode validate`)."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "--log-level", "warning", "-c", config],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class RestProxy:
    """A running Envoy that transcodes REST on `base_url` to gRPC on `upstream`."""

    base_url: str
    upstream: str
    envoy: EnvoyProcess

    @property
    def address(self) -> str:
        """host:port of the listener, for gRPC clients that go through Envoy."""
        return self.base_url.removeprefix("http://")


@contextlib.contextmanager
def rest_proxy(
    upstream: str,
    workdir: str | os.PathLike[str],
    *,
    descriptor_path: str | os.PathLike[str] = DESCRIPTOR_PATH,
) -> Iterator[RestProxy]:
    """Run Envoy on a free loopback port in front of the gRPC server at `upstream` (host:port)."""
    host, _, port = upstream.rpartition(":")
    config = render_envoy_config(
        listen_host="127.0.0.1",
        listen_port=0,
        upstream_host=host.strip("[]"),
        upstream_ports=[int(port)],
        descriptor_path=descriptor_path,
    )
    with start_envoy(config, workdir) as envoy:
        yield RestProxy(
            base_url=f"http://127.0.0.1:{envoy.listener_port()}", upstream=upstream, envoy=envoy
        )


@dataclass(frozen=True)
class HttpRule:
    """One RPC's REST route, as its google.api.http option declares it."""

    service: str
    method: str
    verb: str
    path: str
    body: str
    server_streaming: bool

    @property
    def rpc(self) -> str:
        return f"{self.service}/{self.method}"


def http_rules(descriptor_path: str | os.PathLike[str] = DESCRIPTOR_PATH) -> list[HttpRule]:
    """Every REST route of the transcoded services, additional_bindings included."""
    image = descriptor_pb2.FileDescriptorSet.FromString(pathlib.Path(descriptor_path).read_bytes())
    wanted = set(transcoded_services(descriptor_path))
    rules = []
    for file in image.file:
        for service in file.service:
            full_name = f"{file.package}.{service.name}"
            if full_name not in wanted:
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in (rule, *rule.additional_bindings):
                    verb = binding.WhichOneof("pattern")
                    assert verb is not None, f"{full_name}/{method.name} has no REST route"
                    rules.append(
                        HttpRule(
                            service=full_name,
                            method=method.name,
                            verb=verb.upper(),
                            path=getattr(binding, verb),
                            body=binding.body,
                            server_streaming=method.server_streaming,
                        )
                    )
    return rules


@dataclass(frozen=True)
class RawResponse:
    """An HTTP/1.1 response read to its end, trailers included."""

    status: int
    headers: dict[str, str]
    body: bytes
    trailers: dict[str, str]

    @property
    def lines(self) -> list[bytes]:
        """The body's non-empty lines (NDJSON messages of a stream)."""
        return [line for line in self.body.split(b"\n") if line.strip()]


async def get_with_trailers(
    url: str, *, headers: dict[str, str] | None = None, time_limit: float = 10.0
) -> RawResponse:
    """GET `url` over HTTP/1.1 (with extra `headers`) and return it with its trailers."""
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
    async with asyncio.timeout(time_limit):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return await _exchange(reader, writer, f"{host}:{port}", target, headers or {})
        finally:
            writer.close()
            await writer.wait_closed()


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    authority: str,
    target: str,
    extra: dict[str, str],
) -> RawResponse:
    conn = h11.Connection(our_role=h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=target,
        headers=[
            ("Host", authority),
            ("TE", "trailers"),
            ("Connection", "close"),
            *extra.items(),
        ],
    )
    writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
    await writer.drain()
    status, headers, body, trailers = 0, {}, bytearray(), {}
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            trailers = {k.decode().lower(): v.decode() for k, v in event.headers}
            return RawResponse(status, headers, bytes(body), trailers)
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError(f"connection closed before the response to {target} ended")
