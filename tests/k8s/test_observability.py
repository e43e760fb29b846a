"""Every service is wired for observability in the manifests: a `metrics` port that
CONTEXTMESH_METRICS_PORT serves, OTEL_* settings the tracing code accepts, network policies
that let Prometheus in and the Collector be reached, and scrape configs (PodMonitor and
plain Prometheus) that find exactly the services and label each with its name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from meshkit import telemetry
from tests.k8s.manifests import (
    K8S,
    OBSERVABILITY,
    Manifests,
    build_base,
    containers,
    kustomize,
    load_yaml_documents,
)

BASE_MANIFESTS = build_base()
SERVICES = sorted(BASE_MANIFESTS.names("Deployment"))
EXAMPLE = K8S / "overlays" / "example" / "kustomization.yaml"


@pytest.fixture(scope="module")
def base() -> Manifests:
    return BASE_MANIFESTS


def _main_container(manifests: Manifests, name: str) -> dict[str, Any]:
    return next(c for c in containers(manifests.get("Deployment", name)) if c["name"] == name)


def _metrics_port(manifests: Manifests, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in _main_container(manifests, name)["ports"]}
    port: int = ports["metrics"]
    return port


def _pod_labels(manifests: Manifests, kind: str) -> dict[str, dict[str, str]]:
    return {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
        for w in manifests.of_kind(kind)
    }


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and In/NotIn/Exists expressions)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        met = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not met:
            return False
    return True


def test_the_services_are_the_six_deployments() -> None:
    assert SERVICES == ["gateway", "mergesvc", "notifysvc", "searchsvc", "syncsvc", "trainsvc"]


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_serves_metrics_on_its_named_port(base: Manifests, name: str) -> None:
    env = {e["name"]: e.get("value") for e in _main_container(base, name)["env"]}

    assert env["CONTEXTMESH_METRICS_PORT"] == str(_metrics_port(base, name))


def test_all_services_share_one_metrics_port(base: Manifests) -> None:
    assert {_metrics_port(base, name) for name in SERVICES} == {9464}


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_names_itself_and_reads_the_telemetry_config(
    base: Manifests, name: str
) -> None:
    container = _main_container(base, name)
    env = {e["name"]: e.get("value") for e in container["env"]}
    sources = [s["configMapRef"]["name"] for s in container["envFrom"]]

    assert env["OTEL_SERVICE_NAME"] == name
    # kustomize appends a hash of its content to a generated ConfigMap's name.
    assert any(re.fullmatch(r"contextmesh-telemetry-[a-z0-9]{10}", s) for s in sources), sources


def test_the_base_exports_nothing_until_an_overlay_names_a_collector(
    base: Manifests, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = base.get("ConfigMap", "contextmesh-telemetry")["data"]
    for key, value in config.items():
        monkeypatch.setenv(key, value)

    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == ""
    assert telemetry.tracing_enabled() is False


def _example_telemetry() -> dict[str, str]:
    """The telemetry ConfigMap as kustomize builds the example overlay (the base's, with the
    overlay's values merged in)."""
    built = Manifests([d for d in yaml.safe_load_all(kustomize(EXAMPLE.parent)) if d])
    data: dict[str, str] = built.get("ConfigMap", "contextmesh-telemetry")["data"]
    return data


def test_the_example_overlay_sends_sampled_traces_to_a_collector_over_otlp_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    for key, value in _example_telemetry().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "syncsvc")
    monkeypatch.delenv("CONTEXTMESH_TRACE_CONSOLE", raising=False)

    provider = telemetry.build_tracer_provider("unused")
    assert provider is not None
    try:
        assert isinstance(provider.sampler, ParentBasedTraceIdRatio)
        assert "0.1" in provider.sampler.get_description()
        assert provider.resource.attributes["service.name"] == "syncsvc"
    finally:
        provider.shutdown()
    assert re.fullmatch(
        r"http://[a-z0-9.-]+:4318", _example_telemetry()["OTEL_EXPORTER_OTLP_ENDPOINT"]
    )


def test_prometheus_alone_may_reach_the_metrics_port_of_every_service(base: Manifests) -> None:
    policy = base.get("NetworkPolicy", "metrics")
    labels = _pod_labels(base, "Deployment")

    assert {
        name for name in labels if _matches(policy["spec"]["podSelector"], labels[name])
    } == set(SERVICES)
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics"}]
    (peer,) = rule["from"]
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
    }


def test_every_pod_may_reach_the_collector(base: Manifests) -> None:
    # Only notifysvc's egress is limited (it calls URLs users chose): the Collector is among
    # the places it may reach, on OTLP/HTTP's port.
    limited = [p for p in base.of_kind("NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]]
    assert [p["metadata"]["name"] for p in limited] == ["notifysvc-egress"]
    (policy,) = limited
    collector = {"app.kubernetes.io/name": "opentelemetry-collector"}
    assert any(
        peer.get("podSelector", {}).get("matchLabels") == collector
        and peer.get("namespaceSelector") == {}
        and rule["ports"] == [{"port": 4318}]
        for rule in policy["spec"]["egress"]
        for peer in rule["to"]
    )


def _component() -> dict[str, Any]:
    component: dict[str, Any] = yaml.safe_load((OBSERVABILITY / "kustomization.yaml").read_text())
    return component


def _component_objects() -> Iterator[dict[str, Any]]:
    for resource in _component()["resources"]:
        yield from load_yaml_documents(OBSERVABILITY / resource)


def test_the_operator_objects_are_an_optional_component_the_example_uses() -> None:
    component = _component()
    kinds = {d["kind"] for d in _component_objects()}

    assert component["kind"] == "Component"
    assert kinds == {"PodMonitor", "PrometheusRule"}
    assert "../../observability" in yaml.safe_load(EXAMPLE.read_text())["components"]
    for doc in _component_objects():
        assert doc["metadata"]["namespace"] == "contextmesh", doc["kind"]
    (dashboard,) = component["configMapGenerator"]
    assert dashboard["namespace"] == "contextmesh"
    assert dashboard["files"] == ["contextmesh.json=grafana-dashboard.json"]
    assert dashboard["options"]["labels"] == {"grafana_dashboard": "1"}


def test_the_pod_monitor_scrapes_the_metrics_port_of_exactly_the_services(
    base: Manifests,
) -> None:
    monitor = next(d for d in _component_objects() if d["kind"] == "PodMonitor")
    workloads = {**_pod_labels(base, "Deployment"), **_pod_labels(base, "StatefulSet")}
    workloads |= {f"job/{k}": v for k, v in _pod_labels(base, "Job").items()}

    selected = {
        name for name, labels in workloads.items() if _matches(monitor["spec"]["selector"], labels)
    }
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]

    assert selected == set(SERVICES)
    assert endpoint["port"] == "metrics"
    assert endpoint["relabelings"] == [
        {
            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
            "targetLabel": "service",
        }
    ]


def _pod_targets(manifests: Manifests) -> Iterator[dict[str, str]]:
    """What Prometheus' pod discovery yields for these workloads: one target per container
    port, with the meta labels the scrape config relabels."""
    for workload in manifests.workloads() + manifests.of_kind("Job"):
        name = workload["metadata"]["name"]
        pod = {
            "__meta_kubernetes_namespace": workload["metadata"]["namespace"],
            "__meta_kubernetes_pod_name": f"{name}-0",
        }
        for key, value in workload["spec"]["template"]["metadata"]["labels"].items():
            pod["__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", key)] = value
        for container in containers(workload):
            for port in container.get("ports", []):
                yield {
                    **pod,
                    "__address__": f"10.0.0.1:{port['containerPort']}",
                    "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                }


def _relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus' relabelling for the actions the scrape config uses (keep, replace), with
    Prometheus' defaults; None when the target is dropped."""
    labels = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule["source_labels"])
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", rule.get("replacement", "$1"))
            labels[rule["target_label"]] = match.expand(replacement)
        assert action in ("keep", "replace"), action
    return labels


def test_the_plain_scrape_config_keeps_one_metrics_target_per_service_pod(
    base: Manifests,
) -> None:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yaml").read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["kubernetes_sd_configs"]

    kept = [
        labels
        for target in _pod_targets(base)
        if (labels := _relabel(target, job["relabel_configs"])) is not None
    ]

    assert discovery == {"role": "pod", "namespaces": {"names": ["contextmesh"]}}
    assert sorted((t["service"], t["__address__"]) for t in kept) == [
        (name, "10.0.0.1:9464") for name in SERVICES
    ]
    assert all(t["namespace"] == "contextmesh" and t["pod"] for t in kept)
    assert config["rule_files"] == ["alert-rules.yaml"]
