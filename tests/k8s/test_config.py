"""The settings a pod gets (ConfigMap, component, its own env) are ones the services accept."""

from __future__ import annotations

import re

import pytest

from meshkit.config import Settings
from tests.k8s.manifests import ROOT, Manifests, build_base, containers

COMPONENT_SCHEMES = {"blob-azure": "azure://", "blob-gcs": "gs://", "blob-s3": "s3://"}


def _env(manifests: Manifests, deployment: str) -> dict[str, str]:
    """What the main container of a Deployment sees, secrets replaced by a stand-in."""
    container = next(containers(manifests.get("Deployment", deployment)))
    env = dict(manifests.config())
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "<from a secret>")
    return env


def test_the_base_settings() -> None:
    config = build_base().config()

    assert config["CONTEXTMESH_NATS_URL"] == "tls://nats:4222"
    assert config["CONTEXTMESH_NATS_TLS_CA"] == "/etc/contextmesh/nats-ca/ca.crt"
    assert config["CONTEXTMESH_NATS_DECLARE"] == "off"  # the nats-declare Job declares
    assert config["CONTEXTMESH_JS_REPLICAS"] == "3"
    assert config["CONTEXTMESH_SOURCE"] == "github"
    assert "CONTEXTMESH_SYNC_REPLICAS" not in config  # the split follows live replicas
    assert config["CONTEXTMESH_BLOB_URL"].startswith("unset://")


@pytest.mark.parametrize("component", sorted(COMPONENT_SCHEMES))
@pytest.mark.parametrize(
    "deployment", ["gateway", "syncsvc", "mergesvc", "searchsvc", "trainsvc", "notifysvc"]
)
def test_every_service_accepts_its_settings(component: str, deployment: str) -> None:
    manifests = build_base(component)

    settings = Settings.from_env(_env(manifests, deployment))

    assert settings.blob_url.startswith(COMPONENT_SCHEMES[component])
    assert settings.nats.replicas == 3
    assert settings.nats.user == deployment
    assert settings.nats.nkey_seed_file == "/etc/contextmesh/nats/seed"
    assert settings.nats.declare is False
    assert settings.sync.concurrency == 80  # at most: each worker takes 80 / live replicas


def test_listen_and_dial_addresses() -> None:
    base = build_base()

    assert Settings.from_env(_env(base, "gateway")).search_addr == "searchsvc:50052"
    assert Settings.from_env(_env(base, "searchsvc")).search_addr == "[::]:50052"
    assert Settings.from_env(_env(base, "gateway")).gateway_addr == "[::]:50051"
    assert Settings.from_env(_env(base, "syncsvc")).github.token == "<from a secret>"


def test_every_variable_set_is_one_the_code_reads() -> None:
    known = set(re.findall(r'"(CONTEXTMESH_[A-Z0-9_]+)"', (ROOT / "meshkit/config.py").read_text()))
    base = build_base()
    used = set(base.config())
    for workload in base.workloads():
        for container in containers(workload):
            used |= {e["name"] for e in container.get("env", [])}

    unknown = {name for name in used if name.startswith("CONTEXTMESH_")} - known
    assert not unknown, f"not read by meshkit.config: {sorted(unknown)}"
