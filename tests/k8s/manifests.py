"""Read k8s/ the way kustomize builds it, closely enough to check it without a cluster.

`build_base()` returns every object of k8s/base: the listed resources, with the namespace
set, plus the ConfigMaps the generators make (named without kustomize's hash suffix, which
kustomize also rewrites in every reference). `with_component()` merges a component's
ConfigMap literals, which is all the blob components change in settings.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "BASE",
    "COMPONENTS",
    "K8S",
    "OBSERVABILITY",
    "ROOT",
    "Manifests",
    "build_base",
    "containers",
    "load_yaml_documents",
    "pod_spec",
    "read_env_file",
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
COMPONENTS = K8S / "components"
OBSERVABILITY = K8S / "observability"

Doc = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
CLUSTER_SCOPED = ("Namespace",)


def load_yaml_documents(path: pathlib.Path) -> list[Doc]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def read_env_file(path: pathlib.Path) -> dict[str, str]:
    """KEY=VALUE lines as kustomize's `envs` reads them (# comments and blank lines skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: {line!r} is not KEY=VALUE"
            out[key] = value
    return out


def _literals(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


@dataclass
class Manifests:
    """The objects of one build."""

    docs: list[Doc]

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Doc:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind(kind)}

    def workloads(self) -> list[Doc]:
        return [d for d in self.docs if d["kind"] in WORKLOAD_KINDS]

    def config(self) -> dict[str, str]:
        """The CONTEXTMESH_* settings ConfigMap's data."""
        data: dict[str, str] = self.get("ConfigMap", "contextmesh-config")["data"]
        return data

    def with_component(self, name: str) -> Manifests:
        """This build with a component's ConfigMap merges applied."""
        component = yaml.safe_load((COMPONENTS / name / "kustomization.yaml").read_text())
        docs = [dict(d) for d in self.docs]
        for generator in component.get("configMapGenerator", []):
            assert generator.get("behavior") == "merge", generator
            for i, doc in enumerate(docs):
                if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == generator["name"]:
                    merged = {**doc["data"], **_literals(generator.get("literals", []))}
                    docs[i] = {**doc, "data": merged}
        return Manifests(docs)


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc, *, init: bool = True) -> Iterator[Doc]:
    spec = pod_spec(workload)
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])


def build_base() -> Manifests:
    """k8s/base as kustomize would build it, ConfigMap names without the hash suffix."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    namespace = kustomization["namespace"]
    docs: list[Doc] = []
    for resource in kustomization["resources"]:
        docs += load_yaml_documents(BASE / resource)
    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env in generator.get("envs", []):
            data.update(read_env_file(BASE / env))
        for entry in generator.get("files", []):
            key, _, source = entry.rpartition("=")
            data[key or pathlib.Path(source).name] = (BASE / source).read_text()
        data.update(_literals(generator.get("literals", [])))
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"].setdefault("namespace", namespace)
    return Manifests(docs)
