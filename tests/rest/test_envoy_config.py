"""meshctl.envoy: the config it renders from the contracts, and the Envoy process it runs."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2

from meshctl.envoy import (
    MAX_HEAP_BYTES,
    MAX_REQUEST_BYTES,
    MAX_WEBHOOK_BYTES,
    EnvoyError,
    render_envoy_config,
    start_envoy,
    transcoded_services,
)
from tests.support.envoy import DESCRIPTOR_PATH, envoy_validate, http_rules

PUBLIC = ["contextmesh.gateway.v1.BundleService", "contextmesh.gateway.v1.WebhookService"]


def _render(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "upstream_host": "127.0.0.1",
        "upstream_ports": [50051],
        "descriptor_path": DESCRIPTOR_PATH,
        **overrides,
    }
    return render_envoy_config(**args)


def _transcoder(config: dict[str, Any]) -> dict[str, Any]:
    manager = _manager(config)
    found = [f for f in manager["http_filters"] if f["name"].endswith("grpc_json_transcoder")]
    assert len(found) == 1
    typed: dict[str, Any] = found[0]["typed_config"]
    return typed


def _manager(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def test_transcoded_services_are_those_with_rest_routes() -> None:
    # SearchService is internal (no google.api.http rules), so it stays off REST; OpsService
    # has rules but is the admin plane, served on the gateway's admin listener only.
    assert transcoded_services(DESCRIPTOR_PATH) == PUBLIC


def test_an_admin_service_is_never_transcoded_even_when_asked() -> None:
    with pytest.raises(EnvoyError, match="admin plane"):
        _render(services=[*PUBLIC, "contextmesh.ops.v1.OpsService"])


def test_the_edge_has_limits() -> None:
    config = yaml.safe_load(_render())

    assert _transcoder(config)["max_request_body_size"] == MAX_REQUEST_BYTES
    assert config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] > 0
    breakers = config["static_resources"]["clusters"][0]["circuit_breakers"]["thresholds"][0]
    assert breakers["max_requests"] > 0 and breakers["max_pending_requests"] > 0
    overload = config["overload_manager"]
    heap = overload["resource_monitors"][0]
    assert heap["name"] == "envoy.resource_monitors.fixed_heap"
    assert heap["typed_config"]["max_heap_size_bytes"] == MAX_HEAP_BYTES
    assert {a["name"] for a in overload["actions"]} >= {
        "envoy.overload_actions.shrink_heap",
        "envoy.overload_actions.stop_accepting_requests",
    }


def test_only_the_webhook_route_takes_a_larger_raw_body() -> None:
    """GitHub's deliveries are the one body that is not a few names: its route has the
    transcoder's settings with a limit of its own, and every other route keeps 64 KiB."""
    config = yaml.safe_load(_render())
    routes = _manager(config)["route_config"]["virtual_hosts"][0]["routes"]

    webhook = [r for r in routes if r["match"] == {"path": "/v1/webhooks/github"}]
    assert len(webhook) == 1 and routes[-1]["match"] == {"prefix": "/"}
    own = webhook[0]["typed_per_filter_config"]["envoy.filters.http.grpc_json_transcoder"]
    assert own["max_request_body_size"] == MAX_WEBHOOK_BYTES > MAX_REQUEST_BYTES
    assert {**own, "max_request_body_size": MAX_REQUEST_BYTES} == _transcoder(config)
    assert http_rules_of("contextmesh.gateway.v1.WebhookService") == [
        ("POST", "/v1/webhooks/github")
    ]
    without = yaml.safe_load(_render(services=["contextmesh.gateway.v1.BundleService"]))
    assert len(_manager(without)["route_config"]["virtual_hosts"][0]["routes"]) == 1


def http_rules_of(service: str) -> list[tuple[str, str]]:
    return [(r.verb, r.path) for r in http_rules() if r.service == service]


def test_a_descriptor_without_rest_routes_is_refused(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.binpb"
    empty.write_bytes(descriptor_pb2.FileDescriptorSet().SerializeToString())

    with pytest.raises(EnvoyError, match=r"no service with google\.api\.http"):
        transcoded_services(empty)
    with pytest.raises(EnvoyError, match="cannot read"):
        transcoded_services(tmp_path / "missing.binpb")
    garbage = tmp_path / "garbage.binpb"
    garbage.write_bytes(b"\xff\xff\xff\xff")
    with pytest.raises(EnvoyError, match="cannot read"):
        transcoded_services(garbage)


def test_the_config_carries_the_transcoding_settings() -> None:
    config = yaml.safe_load(_render())

    transcoder = _transcoder(config)
    assert transcoder["services"] == PUBLIC
    assert transcoder["proto_descriptor"] == os.fspath(DESCRIPTOR_PATH)
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["print_options"]["stream_newline_delimited"] is True
    assert transcoder["print_options"]["always_print_primitive_fields"] is True
    assert transcoder["request_validation_options"] == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": True,
    }
    manager = _manager(config)
    assert manager["http_protocol_options"] == {"enable_trailers": True}
    route = manager["route_config"]["virtual_hosts"][0]["routes"][-1]
    assert route["match"] == {"prefix": "/"} and route["route"]["timeout"] == "0s"
    assert manager["stream_idle_timeout"] == "3600s"
    cluster = config["static_resources"]["clusters"][0]
    options = cluster["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(options.values()))["explicit_http_config"]
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_upstream_discovery_and_health_checks_follow_the_arguments() -> None:
    by_ip = yaml.safe_load(_render())["static_resources"]["clusters"][0]
    by_name = yaml.safe_load(_render(upstream_host="gateway", upstream_health_check=True))[
        "static_resources"
    ]["clusters"][0]

    assert by_ip["type"] == "STATIC" and "health_checks" not in by_ip
    assert by_name["type"] == "STRICT_DNS"
    assert by_name["health_checks"][0]["grpc_health_check"] == {}


def test_explicit_services_and_descriptor_path_for_a_container() -> None:
    config = yaml.safe_load(
        _render(descriptor_path="/etc/envoy/descriptor/contextmesh.binpb", services=PUBLIC[:1])
    )

    assert _transcoder(config)["services"] == PUBLIC[:1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"listen_port": 70000}, "listen_port"),
        ({"upstream_ports": [50051, -1]}, "upstream_port"),
        ({"upstream_ports": []}, "no gateway"),
        ({"admin_port": 65536}, "admin_port"),
        ({"services": []}, "services is empty"),
    ],
)
def test_bad_arguments_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvoyError, match=message):
        _render(**overrides)


def test_every_gateway_is_an_endpoint_of_the_upstream_cluster() -> None:
    config = yaml.safe_load(_render(upstream_ports=[50051, 50061]))
    [cluster] = config["static_resources"]["clusters"]
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints]
    assert ports == [50051, 50061]


def test_envoy_accepts_the_rendered_config(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(_render(upstream_host="gateway.contextmesh.svc", upstream_health_check=True))

    result = envoy_validate(path)

    assert result.returncode == 0, result.stdout + result.stderr


def test_two_envoys_run_side_by_side_and_stop(tmp_path: pathlib.Path) -> None:
    with (
        start_envoy(_render(), tmp_path / "a") as first,
        start_envoy(_render(), tmp_path / "b") as second,
    ):
        assert first.listener_port() != second.listener_port()
        assert first.admin_url != second.admin_url
        assert first.poll() is None and second.poll() is None

    assert first.poll() is not None and second.poll() is not None
    assert first.close() == first.poll()  # close is idempotent


def test_a_config_envoy_rejects_raises_with_its_log(tmp_path: pathlib.Path) -> None:
    broken = _render().replace("convert_grpc_status: true", "convert_grpc_status: maybe")

    with pytest.raises(EnvoyError, match="exited with code") as raised:
        start_envoy(broken, tmp_path)

    assert "convert_grpc_status" in str(raised.value) or "maybe" in str(raised.value)
