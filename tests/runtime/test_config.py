"""Settings come from the environment once, and every error names the variable to fix."""

from __future__ import annotations

import pytest

from meshkit.config import Settings
from meshkit.errors import ConfigError


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.nats.url == "nats://127.0.0.1:4222"
    assert settings.blob_url.startswith("file://") and settings.blob_url.endswith("/blobs")
    assert settings.sync.concurrency == 80 and settings.train.enabled


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CONTEXTMESH_SYNC_CONCURRENCY", "lots", "whole number"),
        ("CONTEXTMESH_SYNC_CONCURRENCY", "500", "between 1 and 100"),
        ("CONTEXTMESH_TRAINING", "maybe", "true or false"),
        ("CONTEXTMESH_SOURCE", "gitlab", "one of local, github"),
        ("CONTEXTMESH_TRAIN_LR", "fast", "a number"),
        ("CONTEXTMESH_TRAIN_KIND", "lora", "one of adapter, full"),
        ("CONTEXTMESH_TRAIN_ADAPTER_RANK", "0", "between 1 and 256"),
        ("CONTEXTMESH_JS_REPLICAS", "7", "between 1 and 5"),
        ("CONTEXTMESH_FORCE_RATE", "0", ">= 0.001"),
        ("CONTEXTMESH_MAX_WATCHES_PER_JOB", "0", ">= 1"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ") and says in str(info.value)


def test_the_training_kind_and_its_adapter_settings_are_read() -> None:
    train = Settings.from_env(
        {
            "CONTEXTMESH_TRAIN_KIND": "Adapter",
            "CONTEXTMESH_TRAIN_ADAPTER_RANK": "4",
            "CONTEXTMESH_TRAIN_ADAPTER_LR": "0.0005",
        }
    ).train
    assert (train.kind, train.adapter_rank, train.adapter_learning_rate) == ("adapter", 4, 5e-4)
    assert Settings.from_env({"CONTEXTMESH_TRAIN_KIND": "full"}).train.kind == "full"
    assert Settings.from_env({}).train.kind == "full"  # measured: docs/benchmarks.md


def test_limits_are_read_from_their_variables() -> None:
    limits = Settings.from_env(
        {
            "CONTEXTMESH_REFRESH_RATE": "2.5",
            "CONTEXTMESH_REFRESH_BURST": "7",
            "CONTEXTMESH_FORCE_RATE": "0.01",
            "CONTEXTMESH_FORCE_BURST": "2",
            "CONTEXTMESH_MAX_WATCHES_PER_JOB": "3",
            "CONTEXTMESH_MAX_WATCHES_PER_CALLER": "9",
        }
    ).limits
    assert (limits.refresh_rate, limits.refresh_burst) == (2.5, 7)
    assert (limits.force_rate, limits.force_burst) == (0.01, 2)
    assert (limits.watches_per_job, limits.watches_per_caller) == (3, 9)
    defaults = Settings.from_env({}).limits
    assert defaults.force_rate < defaults.refresh_rate  # force is the stricter one


def test_sync_concurrency_is_a_cap_on_the_live_split() -> None:
    # syncsvc divides 80 by the replicas alive (tests/sync/test_github_budget.py); this caps it.
    assert Settings.from_env({}).sync.concurrency == 80
    assert Settings.from_env({"CONTEXTMESH_SYNC_CONCURRENCY": "10"}).sync.concurrency == 10


def test_the_token_is_read_but_never_shown() -> None:
    settings = Settings.from_env({"GITHUB_TOKEN": "ghp_" + "a" * 36})
    assert settings.github.token == "ghp_" + "a" * 36
    assert "ghp_" not in repr(settings)
    settings = Settings.from_env({"CONTEXTMESH_EXTRA_FILES": "A.md, B.md,,"})
    assert settings.sync.extra_files == ("A.md", "B.md")
