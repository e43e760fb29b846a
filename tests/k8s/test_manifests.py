"""k8s/ parses, every built-in kind passes Kubernetes' own schema (strict: no unknown field),
every kustomization builds with the real kustomize, and every reference between objects
resolves."""

from __future__ import annotations

import pathlib
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.k8s.manifests import (
    BASE,
    COMPONENTS,
    K8S,
    OBSERVABILITY,
    Manifests,
    build_base,
    containers,
    kustomize,
    load_yaml_documents,
    pod_spec,
)

CRD_KINDS = {"ScaledObject"}
YAML_FILES = sorted(K8S.rglob("*.yaml"))
# Other programs' configs kept beside the manifests: Envoy's, and Prometheus' own files.
FOREIGN_CONFIGS = {
    BASE / "envoy" / "envoy.yaml",
    OBSERVABILITY / "prometheus.yaml",
    OBSERVABILITY / "alert-rules.yaml",
    OBSERVABILITY / "alert-rules.test.yaml",
}


@pytest.fixture(scope="module")
def base() -> Manifests:
    return build_base()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_parses(path: pathlib.Path) -> None:
    docs = load_yaml_documents(path)

    assert docs, f"{path} is empty"
    if path not in FOREIGN_CONFIGS:
        assert all(isinstance(doc, dict) and "kind" in doc for doc in docs)


def _identities(manifests: Manifests) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in manifests.docs}


@pytest.mark.parametrize("component", sorted(p.name for p in COMPONENTS.iterdir()))
def test_the_base_builds_with_each_component(component: str, base: Manifests) -> None:
    built = build_base(component)

    # A component adds or changes objects; it never drops one (a generated ConfigMap's name
    # changes with its content).
    unchanged = {(k, n) for k, n in _identities(base) if k != "ConfigMap"}
    assert unchanged <= _identities(built)


def test_the_example_overlay_builds_with_images_from_its_registry() -> None:
    example = kustomize(K8S / "overlays" / "example")
    built = Manifests([doc for doc in yaml.safe_load_all(example) if doc is not None])
    images = {c["image"] for w in built.workloads() for c in containers(w)}

    assert {
        "registry.example.com/contextmesh/service:0.1.0",
        "registry.example.com/contextmesh/trainer:0.1.0",
    } <= images
    assert not any(image.startswith("contextmesh/") for image in images)


def test_the_base_lists_every_manifest_in_it() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}

    assert set(kustomization["resources"]) == on_disk


def test_components_are_components() -> None:
    names = sorted(p.name for p in COMPONENTS.iterdir())

    assert names == ["blob-azure", "blob-gcs", "blob-s3", "nats-tls-cert-manager"]
    for name in names:
        component = yaml.safe_load((COMPONENTS / name / "kustomization.yaml").read_text())
        assert component["kind"] == "Component"


def test_built_in_kinds_pass_strict_schema_validation(base: Manifests) -> None:
    version = kubernetes_validate.latest_version()
    errors = []
    for doc in base.docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_only_crd_kinds_lack_a_built_in_schema(base: Manifests) -> None:
    version = kubernetes_validate.latest_version()
    for doc in base.of_kind("ScaledObject"):
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(doc, version, strict=True)
    assert {d["kind"] for d in base.docs} >= {"Deployment", "StatefulSet", "ScaledObject"}


def test_one_file_per_service_with_deployment_service_and_account() -> None:
    for service in ("gateway", "syncsvc", "mergesvc", "searchsvc", "trainsvc", "notifysvc"):
        kinds = {d["kind"] for d in load_yaml_documents(BASE / f"{service}.yaml")}
        assert {"Deployment", "Service", "ServiceAccount"} <= kinds, service


def test_references_resolve(base: Manifests) -> None:
    config_maps = base.names("ConfigMap")
    accounts = base.names("ServiceAccount")
    for workload in base.workloads():
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["serviceAccountName"] in accounts, name
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (name, volume)
        mounted = {v["name"] for v in spec.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for container in containers(workload):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, (name, source)
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in mounted | claims, (name, mount)


def test_services_select_pods_on_named_ports(base: Manifests) -> None:
    for service in base.of_kind("Service"):
        selector = service["spec"]["selector"]
        matched = [
            w
            for w in base.workloads()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, service["metadata"]["name"]
        ports = {p["name"]: p["containerPort"] for c in containers(matched[0]) for p in _ports(c)}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)


def test_grpc_services_name_their_port_grpc(base: Manifests) -> None:
    ports = {
        s["metadata"]["name"]: {p["name"]: p["port"] for p in s["spec"]["ports"]}
        for s in base.of_kind("Service")
    }

    assert ports["gateway"] == {"grpc": 50051, "http": 8080}
    assert ports["searchsvc"] == {"grpc": 50052}
    for worker in ("syncsvc", "mergesvc", "trainsvc", "notifysvc"):
        assert ports[worker] == {"grpc-health": 8081}


def test_images_are_pinned(base: Manifests) -> None:
    for workload in base.workloads():
        for container in containers(workload):
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), image


def test_selectors_match_their_pod_labels(base: Manifests) -> None:
    for workload in base.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _ports(container: dict[str, Any]) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = container.get("ports", [])
    return ports
