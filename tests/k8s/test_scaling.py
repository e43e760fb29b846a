"""KEDA: every ScaledObject fits the schema in schemas/, scales on the stream and consumer its
service really drains, and the GPU trainer scales between zero and one on its own pool."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jsonschema
import pytest

from meshkit import topology
from meshkit.config import GITHUB_CONCURRENCY_BUDGET
from tests.k8s.manifests import Manifests, build_base, containers, pod_spec

SCHEMA = json.loads(
    (pathlib.Path(__file__).parent / "schemas" / "scaledobject.schema.json").read_text()
)
# (stream, consumer) each service's replicas drain; the names come from meshkit.topology.
DRAINS = {
    "syncsvc": {
        (topology.DISCOVER.stream, topology.DISCOVER.consumer),
        (topology.SYNC.stream, topology.SYNC.consumer),
    },
    "mergesvc": {(topology.MERGE.stream, topology.MERGE.consumer)},
    "trainsvc": {(topology.TRAIN.stream, topology.TRAIN.consumer)},
    "notifysvc": {(topology.NOTIFY.stream, topology.NOTIFY.consumer)},
}
BASE_MANIFESTS = build_base()
SCALED = BASE_MANIFESTS.of_kind("ScaledObject")


@pytest.fixture(scope="module")
def base() -> Manifests:
    return BASE_MANIFESTS


def _triggers(scaled: dict[str, Any]) -> list[dict[str, str]]:
    return [t["metadata"] for t in scaled["spec"]["triggers"]]


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("scaled", SCALED, ids=lambda s: s["metadata"]["name"])
def test_scaled_objects_fit_the_schema(scaled: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(scaled)
    spec = scaled["spec"]
    # The CRD's CEL rule, which a JSON schema cannot express.
    assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)


def test_the_schema_catches_what_kubectl_would_not() -> None:
    good = next(s for s in SCALED if s["metadata"]["name"] == "mergesvc")
    bad_values = [
        ("lagThreshold", 2),  # a number: KEDA's metadata is strings only
        ("consumr", "mergesvc"),  # a typo KEDA would ignore
        ("natsServerMonitoringEndpoint", "http://nats:8222"),  # the scheme is useHttps'
    ]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for key, value in bad_values:
        bad = json.loads(json.dumps(good))
        bad["spec"]["triggers"][0]["metadata"][key] = value
        assert list(validator.iter_errors(bad)), key


def test_the_topology_still_has_the_streams_this_deployment_was_written_for() -> None:
    names = {(s.stream, s.subject, s.consumer) for s in topology.ALL_WORK_STREAMS}

    assert names == {
        ("DISCOVER", "contextmesh.discover", "syncsvc-discover"),
        ("SYNC", "contextmesh.sync", "syncsvc-sync"),
        ("MERGE", "contextmesh.merge", "mergesvc"),
        ("TRAIN", "contextmesh.train", "trainsvc"),
        ("NOTIFY", "contextmesh.notify", "notifysvc"),
    }
    assert topology.DEADLETTER == "DEADLETTER"


def test_each_worker_scales_on_exactly_the_consumers_it_drains(base: Manifests) -> None:
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in SCALED}

    assert set(scaled) == set(DRAINS)
    for name, drains in DRAINS.items():
        assert {(m["stream"], m["consumer"]) for m in _triggers(scaled[name])} == drains
        assert all(t["type"] == "nats-jetstream" for t in scaled[name]["spec"]["triggers"])
        assert base.get("Deployment", name)


def test_triggers_read_the_nats_monitoring_port_of_this_namespace(base: Manifests) -> None:
    headless = base.get("Service", "nats-headless")
    monitor = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "monitor")
    namespace = headless["metadata"]["namespace"]
    expected = f"nats-headless.{namespace}.svc.cluster.local:{monitor}"

    for scaled in SCALED:
        for metadata in _triggers(scaled):
            assert metadata["natsServerMonitoringEndpoint"] == expected
            assert metadata["account"] == "$G"  # no NATS accounts are configured


def test_keda_targets_leave_replicas_to_keda(base: Manifests) -> None:
    for scaled in SCALED:
        deployment = base.get("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
        assert "replicas" not in deployment["spec"], deployment["metadata"]["name"]


def test_sync_scales_from_2_to_20_within_the_github_budget(base: Manifests) -> None:
    spec = next(s for s in SCALED if s["metadata"]["name"] == "syncsvc")["spec"]

    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 20)
    # Each live replica takes 80 / live of GitHub's concurrency: at the most replicas KEDA
    # may run, each still gets 4 requests.
    assert GITHUB_CONCURRENCY_BUDGET // spec["maxReplicaCount"] == 4


def test_the_trainer_scales_from_zero_to_one_on_the_gpu_pool(base: Manifests) -> None:
    spec = next(s for s in SCALED if s["metadata"]["name"] == "trainsvc")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 1)

    pod = pod_spec(base.get("Deployment", "trainsvc"))
    assert pod["nodeSelector"] == {"contextmesh.io/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    trainer = next(containers(base.get("Deployment", "trainsvc")))
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert trainer["image"].startswith("contextmesh/trainer:")


def test_nothing_else_asks_for_a_gpu(base: Manifests) -> None:
    for workload in base.workloads():
        if workload["metadata"]["name"] == "trainsvc":
            continue
        assert "nodeSelector" not in pod_spec(workload)
        for container in containers(workload):
            assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
