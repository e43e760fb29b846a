"""Every pod is hardened (the namespace enforces Pod Security "restricted"), sized, probed, and
gets secrets only by reference."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.k8s.manifests import K8S, Manifests, build_base, containers, pod_spec

BASE_MANIFESTS = build_base()
WORKLOADS = BASE_MANIFESTS.workloads()
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|CREDENTIAL|_KEY$|CONNECTION_STRING")


def _ids(workload: dict[str, Any]) -> str:
    return f"{workload['kind']}/{workload['metadata']['name']}"


@pytest.fixture(scope="module")
def base() -> Manifests:
    return BASE_MANIFESTS


def test_the_namespace_enforces_the_restricted_profile(base: Manifests) -> None:
    labels = base.get("Namespace", "contextmesh")["metadata"]["labels"]

    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids)
def test_pods_run_non_root_with_runtime_default_seccomp(workload: dict[str, Any]) -> None:
    pod = pod_spec(workload).get("securityContext", {})

    assert pod.get("runAsNonRoot") is True
    assert pod.get("runAsUser", 0) > 0
    assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}
    assert pod_spec(workload).get("automountServiceAccountToken") is False
    assert not pod_spec(workload).get("hostNetwork")


@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids)
def test_containers_are_read_only_without_capabilities(workload: dict[str, Any]) -> None:
    for container in containers(workload):
        context = container.get("securityContext", {})
        assert context.get("readOnlyRootFilesystem") is True, container["name"]
        assert context.get("allowPrivilegeEscalation") is False, container["name"]
        assert context.get("capabilities") == {"drop": ["ALL"]}, container["name"]
        assert not context.get("privileged"), container["name"]
        assert context.get("runAsUser", 1) > 0, container["name"]


@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids)
def test_containers_have_requests_and_limits(workload: dict[str, Any]) -> None:
    for container in containers(workload):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound, {})), (container["name"], bound)


@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids)
def test_containers_have_readiness_and_liveness_probes(workload: dict[str, Any]) -> None:
    for container in containers(workload, init=False):
        assert "readinessProbe" in container, container["name"]
        assert "livenessProbe" in container, container["name"]


def test_services_and_workers_use_native_grpc_probes_on_their_ports(base: Manifests) -> None:
    expected = {
        "gateway": 50051,
        "searchsvc": 50052,
        "syncsvc": 8081,
        "mergesvc": 8081,
        "notifysvc": 8081,
        "trainsvc": 8081,
    }
    for name, port in expected.items():
        container = next(c for c in containers(base.get("Deployment", name)) if c["name"] == name)
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port, (name, probe)
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if port == 8081:
            # Workers serve gRPC health only where CONTEXTMESH_HEALTH_ADDR says.
            assert env["CONTEXTMESH_HEALTH_ADDR"].endswith(f":{port}"), name


@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids)
def test_probe_ports_are_container_ports(workload: dict[str, Any]) -> None:
    for container in containers(workload, init=False):
        ports = {p["containerPort"] for p in container.get("ports", [])}
        names = {p["name"] for p in container.get("ports", [])}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            handler = next(probe[h] for h in ("grpc", "httpGet", "tcpSocket") if h in probe)
            assert handler["port"] in ports | names, (container["name"], kind)


def test_no_secret_is_written_into_the_manifests(base: Manifests) -> None:
    assert not base.of_kind("Secret"), "Secrets are created out of band, never committed"
    for workload in base.workloads():
        for container in containers(workload):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env, (container["name"], env["name"])
                    assert "secretKeyRef" in env["valueFrom"], (container["name"], env["name"])
    for key in base.config():
        assert not SECRET_NAME.search(key), f"{key} belongs in a Secret, not the ConfigMap"
    for path in K8S.rglob("*.yaml"):
        assert "kind: Secret\n" not in path.read_text(), path


def test_only_syncsvc_gets_the_github_token(base: Manifests) -> None:
    holders = {
        w["metadata"]["name"]: env["valueFrom"]["secretKeyRef"]
        for w in base.workloads()
        for c in containers(w)
        for env in c.get("env", [])
        if env["name"] == "GITHUB_TOKEN"
    }

    assert holders == {"syncsvc": {"name": "contextmesh-github", "key": "token"}}


def test_only_syncsvc_mounts_the_github_app_key_read_only(base: Manifests) -> None:
    mounts = {}
    for workload in base.workloads():
        spec = workload["spec"]["template"]["spec"]
        for volume in spec.get("volumes", []):
            if volume.get("secret", {}).get("secretName") != "contextmesh-github-app":
                continue
            for container in containers(workload):
                for mount in container.get("volumeMounts", []):
                    if mount["name"] == volume["name"]:
                        mounts[workload["metadata"]["name"]] = (mount, volume["secret"])
        env = {e["name"]: e for c in containers(workload) for e in c.get("env", [])}
        if "CONTEXTMESH_GITHUB_APP_KEY_FILE" in env:
            assert workload["metadata"]["name"] == "syncsvc"

    [(mount, secret)] = [mounts.pop("syncsvc")]
    assert mounts == {}
    assert mount["readOnly"] is True and secret["defaultMode"] == 0o440
    assert secret["optional"] is True  # without an App, syncsvc starts all the same
    key_file = next(
        e["value"]
        for c in containers(base.get("Deployment", "syncsvc"))
        for e in c.get("env", [])
        if e["name"] == "CONTEXTMESH_GITHUB_APP_KEY_FILE"
    )
    assert key_file == f"{mount['mountPath']}/{secret['items'][0]['path']}"
