"""NATS on Kubernetes is locked down: every client needs TLS and its own NKey, each Deployment
mounts only its own identity, a privileged Job declares the topology, and NetworkPolicies let
only the mesh's pods reach NATS. The shipped nats.conf is also run, for real, on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from meshkit import nats_auth
from meshkit.config import NatsSettings
from meshkit.nats_client import connect
from tests.k8s.manifests import Manifests, build_base, containers, pod_spec
from tests.k8s.test_nats import NATS_CONF, _nats_server, deployed_layout
from tests.support.ports import free_port

BASE_MANIFESTS = build_base()
SERVICES = ("gateway", "syncsvc", "mergesvc", "trainsvc", "searchsvc", "notifysvc")


@pytest.fixture(scope="module")
def base() -> Manifests:
    return BASE_MANIFESTS


def secret_volumes(workload: dict[str, Any]) -> dict[str, str]:
    """volume name -> Secret name, for the pod's Secret volumes."""
    return {
        v["name"]: v["secret"]["secretName"]
        for v in pod_spec(workload).get("volumes", [])
        if "secret" in v
    }


def mounted_at(container: dict[str, Any], volume: str) -> str:
    [mount] = [m for m in container.get("volumeMounts", []) if m["name"] == volume]
    assert mount.get("readOnly") is True, (container["name"], volume)
    return str(mount["mountPath"])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


@pytest.mark.parametrize("service", SERVICES)
def test_every_deployment_mounts_only_its_own_nats_identity(base: Manifests, service: str) -> None:
    deployment = base.get("Deployment", service)
    identities = {
        name: secret
        for name, secret in secret_volumes(deployment).items()
        if secret.startswith("contextmesh-nats-")
    }
    expected = {f"contextmesh-nats-{service}"}
    if service == "gateway":
        expected.add(f"contextmesh-nats-{nats_auth.OPS}")  # OpsService's own identity
    assert set(identities.values()) == expected
    main = next(c for c in containers(deployment) if c["name"] == service)
    env = env_of(main)
    assert env["CONTEXTMESH_NATS_USER"] == service
    own = next(v for v, s in identities.items() if s == f"contextmesh-nats-{service}")
    assert env["CONTEXTMESH_NATS_NKEY_SEED_FILE"] == f"{mounted_at(main, own)}/seed"
    if service == "gateway":
        ops = next(v for v, s in identities.items() if s.endswith(f"-{nats_auth.OPS}"))
        assert env["CONTEXTMESH_NATS_OPS_NKEY_SEED_FILE"] == f"{mounted_at(main, ops)}/seed"
    # No other container of the pod (Envoy, init) sees an identity.
    for other in containers(deployment):
        if other["name"] != service:
            assert not set(identities) & {m["name"] for m in other.get("volumeMounts", [])}
    # The CA, and only the CA, of the servers' TLS Secret.
    [ca] = [
        v
        for v in pod_spec(deployment)["volumes"]
        if v.get("secret", {}).get("secretName") == "nats-tls"
    ]
    assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert mounted_at(main, ca["name"]) == "/etc/contextmesh/nats-ca"


def test_every_identity_the_server_knows_has_exactly_one_holder(base: Manifests) -> None:
    holders: dict[str, list[str]] = {}
    for doc in [*base.workloads(), *base.of_kind("Job")]:
        for secret in secret_volumes(doc).values():
            if secret.startswith("contextmesh-nats-"):
                holders.setdefault(secret.removeprefix("contextmesh-nats-"), []).append(
                    doc["metadata"]["name"]
                )
    assert set(holders) == set(nats_auth.IDENTITIES)
    assert holders[nats_auth.ADMIN] == ["nats-declare"]
    assert all(len(names) == 1 for names in holders.values()), holders


def test_a_privileged_job_declares_the_topology_and_services_only_bind(base: Manifests) -> None:
    job = base.get("Job", "nats-declare")
    [container] = list(containers(job))
    assert container["command"] == ["python", "-m", "meshctl", "declare"]
    assert env_of(container)["CONTEXTMESH_NATS_USER"] == nats_auth.ADMIN
    assert base.config()["CONTEXTMESH_NATS_DECLARE"] == "off"
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["capabilities"] == {
        "drop": ["ALL"]
    }


def test_the_servers_require_tls_and_nkeys_and_routes_are_mutual_tls(base: Manifests) -> None:
    text = NATS_CONF.read_text()
    top = re.search(r"^tls \{(.*?)^\}", text, re.M | re.S)
    assert top and "/etc/nats-tls/tls.crt" in top.group(1)
    cluster = re.search(r"^cluster \{(.*?)^\}", text, re.M | re.S)
    assert cluster
    route_tls = re.search(r"tls \{(.*?)\}", cluster.group(1), re.S)
    assert route_tls and re.search(r"verify: true", route_tls.group(1))
    assert 'include "../nats-auth/authorization.conf"' in text
    assert "no_auth_user" not in text and "authorization {" not in text  # only the include
    stateful = base.get("StatefulSet", "nats")
    secrets = secret_volumes(stateful)
    nats = next(containers(stateful))
    assert mounted_at(nats, next(v for v, s in secrets.items() if s == "nats-auth")) == (
        "/etc/nats-auth"
    )
    assert mounted_at(nats, next(v for v, s in secrets.items() if s == "nats-tls")) == (
        "/etc/nats-tls"
    )
    assert base.config()["CONTEXTMESH_NATS_URL"].startswith("tls://")


def policy_for(base: Manifests, app: str) -> dict[str, Any]:
    [policy] = [
        p
        for p in base.of_kind("NetworkPolicy")
        if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == app
    ]
    return policy


def test_network_policies_deny_by_default_and_open_only_the_front_door(base: Manifests) -> None:
    deny = base.get("NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    # Only the gateway takes traffic from anywhere, on its gRPC and REST ports.
    open_to_all = {
        p["metadata"]["name"]
        for p in base.of_kind("NetworkPolicy")
        for rule in p["spec"].get("ingress", [])
        if "from" not in rule
    }
    assert open_to_all == {"gateway"}
    ports = {p["port"] for p in policy_for(base, "gateway")["spec"]["ingress"][0]["ports"]}
    assert ports == {"grpc", "http"}
    [search] = policy_for(base, "searchsvc")["spec"]["ingress"]
    assert search["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}
    ]


def test_only_the_mesh_reaches_nats_and_only_keda_its_monitoring(base: Manifests) -> None:
    rules = {
        rule["ports"][0]["port"]: rule["from"]
        for rule in policy_for(base, "nats")["spec"]["ingress"]
    }
    assert set(rules) == {"client", "cluster", "monitor"}
    [clients] = rules["client"]
    [expression] = clients["podSelector"]["matchExpressions"]
    pods_that_dial_nats = {
        doc["metadata"]["name"]
        for doc in [*base.of_kind("Deployment"), *base.of_kind("Job")]
        if any("CONTEXTMESH_NATS_USER" in env_of(c) for c in containers(doc))
    }
    assert expression["operator"] == "In" and set(expression["values"]) == pods_that_dial_nats
    assert rules["cluster"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}
    ]
    [keda] = rules["monitor"]
    assert keda["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}


def _serve(config: Path, root: Path) -> tuple[list[str], int]:
    """Rewrite the pod-only paths and ports of the deployed config for loopback."""
    port = free_port()
    text = config.read_text()
    text = text.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{port}")
    text = text.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{free_port()}")
    text = text.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{free_port()}")
    text = text.replace("/data/jetstream", str(root / "store"))
    text = text.replace("/var/run/nats/nats.pid", str(root / "nats.pid"))
    config.write_text(text)
    return [_nats_server(), "-c", str(config)], port


def test_the_deployed_config_refuses_anonymous_and_plain_clients_and_applies_permissions(
    tmp_path: Path,
) -> None:
    config = deployed_layout(tmp_path)
    argv, port = _serve(config, tmp_path)
    log = tmp_path / "nats.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "POD_NAME": "nats-0"}
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        asyncio.run(_check_clients(tmp_path, port, log))
    finally:
        server.terminate()
        server.wait(20)


async def _check_clients(root: Path, port: int, log: Path) -> None:
    ca = root / "etc" / "nats-tls" / "ca.crt"
    auth = root / "etc" / "nats-auth"
    url = f"tls://127.0.0.1:{port}"
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    anonymous = Client()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await anonymous.connect(url, tls=context, allow_reconnect=False, connect_timeout=2)
    await anonymous.close()
    # A client that does not start TLS gets nothing but the demand for it.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    info = json.loads((await reader.readline()).removeprefix(b"INFO "))
    writer.close()
    assert info["tls_required"] is True and info["auth_required"] is True
    settings = NatsSettings(
        url=url,
        tls_ca_file=str(ca),
        nkey_seed_file=str(nats_auth.seed_path(auth, "syncsvc")),
        user="syncsvc",
    )
    nc, _ = await asyncio.wait_for(connect(settings, name="syncsvc"), 20)
    try:
        await nc.publish("$KV.cm_bundles.bob", b"forged")
        await nc.flush()
        deadline = time.monotonic() + 10
        violation = 'Publish Violation - Subject "$KV.cm_bundles.bob"'
        while violation not in (text := await asyncio.to_thread(log.read_text)):
            assert time.monotonic() < deadline, text[-3000:]
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
