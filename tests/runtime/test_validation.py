"""The rules every contract shares (contextmesh.validate.v1, protovalidate predefined rules)
hold at each field that takes one, and a refusal tells the caller what to fix."""

from __future__ import annotations

import importlib
import pathlib
import pkgutil
import subprocess
import sys
from typing import Any

import contextmesh
import protovalidate
import pytest
from contextmesh._vendor.buf.validate import validate_pb2
from contextmesh.validate.v1 import rules_pb2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from meshkit.validation import describe_violations

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Per shared rule: a value it accepts and one it refuses.
SAMPLES = {
    "github_name": ("octo-cat", "octo-"),
    "job_id": ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "01arz3ndektsv4rrffq69g5fav"),
}
MESSAGES = {
    "github_name": (
        "must be a GitHub user or organisation name: 1 to 39 letters, digits or hyphens, "
        "neither starting nor ending with a hyphen"
    ),
    "job_id": (
        "must be a job id as RefreshBundle returned it: 26 characters of Crockford base32, "
        "upper case"
    ),
}


def _sites() -> list[tuple[Descriptor, FieldDescriptor, str]]:
    """Every (message, field, rule name) of the generated contracts that uses a shared rule."""
    sites = []
    for info in pkgutil.walk_packages(contextmesh.__path__, "contextmesh."):
        if not info.name.endswith("_pb2") or "._vendor." in info.name:
            continue
        for message in importlib.import_module(info.name).DESCRIPTOR.message_types_by_name.values():
            for field in message.fields:
                rules = field.GetOptions().Extensions[validate_pb2.field].string
                for name in SAMPLES:
                    if rules.Extensions[getattr(rules_pb2, name)]:
                        sites.append((message, field, name))
    return sites


SITES = _sites()


def _violations_of(message: Any, field: str) -> list[protovalidate.Violation]:
    return [
        v
        for v in protovalidate.collect_violations(message)
        if [e.field_name for e in v.proto.field.elements] == [field]
    ]


def test_the_public_requests_and_every_task_use_the_shared_rules() -> None:
    used = {(message.name, field.name) for message, field, _ in SITES}
    assert {
        ("RefreshBundleRequest", "user"),
        ("GetJobRequest", "id"),
        ("WatchJobRequest", "id"),
        ("CancelJobRequest", "id"),
        ("GetBundleRequest", "user"),
        ("DownloadBundleRequest", "user"),
        ("SearchBundleRequest", "user"),
        ("SearchRequest", "user"),
        ("TaskMeta", "job_id"),
        ("DiscoverTask", "user"),
        ("SyncRepoTask", "user"),
        ("MergeTask", "user"),
        ("TrainTask", "user"),
    } <= used


@pytest.mark.parametrize(("message", "field", "rule"), SITES, ids=lambda x: getattr(x, "name", x))
def test_a_shared_rule_refuses_a_bad_value_saying_what_to_fix(
    message: Descriptor, field: FieldDescriptor, rule: str
) -> None:
    cls = message_factory.GetMessageClass(message)
    good, bad = SAMPLES[rule]
    assert _violations_of(cls(**{field.name: good}), field.name) == []

    [violation] = _violations_of(cls(**{field.name: bad}), field.name)

    assert (violation.proto.rule_id, violation.proto.message) == (rule, MESSAGES[rule])
    with pytest.raises(protovalidate.ValidationError) as refused:
        protovalidate.validate(cls(**{field.name: bad}))
    assert f"{field.name}: {MESSAGES[rule]} [{rule}]" in describe_violations(refused.value)


def test_importing_a_contract_is_all_it_takes_to_enforce_its_shared_rules() -> None:
    # A fresh interpreter that imports one generated module and nothing of meshkit: the
    # predefined rule is found through the module's own imports.
    script = (
        "import protovalidate\n"
        "from contextmesh.gateway.v1 import bundle_service_pb2 as pb\n"
        "[v] = protovalidate.collect_violations(pb.GetJobRequest(id='../etc/passwd'))\n"
        "print(v.proto.rule_id)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(ROOT / "gen")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "job_id"


def test_generated_code_adds_no_top_level_package_but_contextmesh() -> None:
    gen = ROOT / "gen"
    assert {p.name for p in gen.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "contextmesh"
    }
    # The vendored module keeps the proto's own name, which protovalidate looks up.
    pool = descriptor_pool.Default()
    assert pool.FindFileByName("buf/validate/validate.proto") is validate_pb2.DESCRIPTOR
    assert validate_pb2.FieldRules.DESCRIPTOR.full_name == "buf.validate.FieldRules"
