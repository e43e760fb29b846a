"""The Dockerfile, checked statically (no Docker engine here): two targets, the trainer alone
with torch, a numeric non-root user that matches the pods, and a small build context."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from tests.k8s.manifests import ROOT, build_base, pod_spec

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def _stages() -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            current = stages[name.strip()] = Stage(name.strip(), base.strip())
        elif current is not None:
            current.instructions.append((keyword, rest.strip()))
    return stages


def _chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it builds on, nearest first."""
    out = [stages[name]]
    while out[-1].base in stages:
        out.append(stages[out[-1].base])
    return out


def test_two_targets_and_service_is_the_default() -> None:
    stages = _stages()

    assert {"service", "trainer"} <= set(stages)
    assert list(stages)[-1] == "service"


def test_only_the_trainer_installs_the_train_extra() -> None:
    stages = _stages()

    def installs(target: str) -> str:
        sources = [
            arg.split()[0].removeprefix("--from=")
            for stage in _chain(stages, target)
            for arg in stage.args("COPY")
            if arg.startswith("--from=")
        ]
        return " ".join(
            run
            for source in sources
            for stage in _chain(stages, source)
            for run in stage.args("RUN")
        )

    assert "[train]" in installs("trainer")
    assert "[train]" not in installs("service") and "torch" not in installs("service")


def test_targets_run_as_the_numeric_user_the_pods_expect() -> None:
    stages = _stages()
    pods = {
        w["metadata"]["name"]: pod_spec(w)["securityContext"]["runAsUser"]
        for w in build_base().workloads()
        if w["metadata"]["name"] != "nats"
    }

    for target in ("service", "trainer"):
        users = stages[target].args("USER")
        assert users and users[-1] == "10001:10001", target
    assert set(pods.values()) == {10001}


def test_the_images_carry_the_descriptor_where_the_gateway_pod_copies_it_from() -> None:
    copied = [
        arg.split()
        for stage in _chain(_stages(), "service")
        for arg in stage.args("COPY")
        if "contextmesh.binpb" in arg
    ]
    init = pod_spec(build_base().get("Deployment", "gateway"))["initContainers"][0]

    assert copied == [["gen/contextmesh/contextmesh.binpb", init["command"][1]]]


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").removeprefix("**/")
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) for i in range(len(parts))) or (
            fnmatch.fnmatch(parts[-1], pattern)
        ):
            ignored = not negate
    return ignored


def test_the_context_keeps_what_the_build_copies_and_drops_the_rest() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        source
        for stage in _stages().values()
        for arg in stage.args("COPY")
        if not arg.startswith("--from=")
        for source in arg.split()[:-1]
    ]

    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source.rstrip("/"), patterns), source
    for heavy in (".venv", ".git", "tests", "k8s", "gateway/__pycache__"):
        assert _ignored(heavy, patterns), heavy
