"""The gateway's Envoy sidecar: its committed config is fresh, Envoy accepts it, and the pod
gives Envoy the config and the descriptor image where the config says."""

from __future__ import annotations

import pathlib
import posixpath
import re
import subprocess
import sys

import yaml

from meshctl.envoy import envoy_binary
from tests.k8s.manifests import BASE, ROOT, build_base, containers, pod_spec
from tests.support.envoy import envoy_validate

ENVOY_YAML = BASE / "envoy" / "envoy.yaml"
DESCRIPTOR = ROOT / "gen" / "contextmesh" / "contextmesh.binpb"


def _sidecar_config() -> dict[str, object]:
    config: dict[str, object] = yaml.safe_load(ENVOY_YAML.read_text())
    return config


def _descriptor_path() -> str:
    match = re.search(r"proto_descriptor: \"([^\"]+)\"", ENVOY_YAML.read_text())
    assert match, "envoy.yaml has no proto_descriptor"
    return match.group(1)


def test_the_committed_config_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, ROOT / "tools" / "gen_envoy.py", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_envoy_validates_the_committed_config(tmp_path: pathlib.Path) -> None:
    # In the pod the descriptor is mounted; here the same image lies in gen/.
    config = tmp_path / "envoy.yaml"
    config.write_text(ENVOY_YAML.read_text().replace(_descriptor_path(), str(DESCRIPTOR)))

    result = envoy_validate(config)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sidecar_listens_for_rest_and_dials_the_gateway_on_loopback() -> None:
    text = ENVOY_YAML.read_text()

    assert 'socket_address: {address: "0.0.0.0", port_value: 8080}' in text
    assert 'socket_address: {address: "127.0.0.1", port_value: 50051}' in text
    assert 'socket_address: {address: "127.0.0.1", port_value: 9901}' in text  # admin


def test_the_pod_mounts_what_the_config_reads() -> None:
    base = build_base()
    deployment = base.get("Deployment", "gateway")
    envoy = next(c for c in containers(deployment) if c["name"] == "envoy")
    mounts = {m["mountPath"]: m["name"] for m in envoy["volumeMounts"]}
    args = envoy["args"]

    config_path = args[args.index("--config-path") + 1]
    assert mounts[posixpath.dirname(config_path)] == "envoy-config"
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    config_map = base.get("ConfigMap", "gateway-envoy")["metadata"]["name"]
    assert volumes["envoy-config"]["configMap"]["name"] == config_map
    descriptor_dir = posixpath.dirname(_descriptor_path())
    assert mounts[descriptor_dir] == "descriptor"

    # The init container fills that volume from the gateway's image (see Dockerfile).
    init = pod_spec(deployment)["initContainers"][0]
    assert init["image"] == next(
        c["image"] for c in containers(deployment) if c["name"] == "gateway"
    )
    assert init["command"][0] == "cp" and init["command"][-1].rstrip("/") == descriptor_dir
    assert {m["mountPath"] for m in init["volumeMounts"]} == {descriptor_dir}


def test_the_sidecar_runs_the_envoy_release_it_was_validated_with() -> None:
    deployment = build_base().get("Deployment", "gateway")
    envoy = next(c for c in containers(deployment) if c["name"] == "envoy")
    version = subprocess.run(
        [envoy_binary(), "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    release = re.search(r"/(\d+\.\d+\.\d+)/", version)

    assert release, version
    assert envoy["image"] == f"envoyproxy/envoy:v{release.group(1)}"
    assert "--disable-hot-restart" in envoy["args"]
    assert "--concurrency" in envoy["args"]


def test_the_generated_config_map_holds_the_committed_config() -> None:
    data = build_base().get("ConfigMap", "gateway-envoy")["data"]

    assert data == {"envoy.yaml": ENVOY_YAML.read_text()}
    assert _sidecar_config()["static_resources"]
