"""The demo repositories in examples/repos: every one syncs, both file shapes are there, and
only the deliberately broken ones warn."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from meshkit.config import DEFAULT_EXTRA_FILES
from meshkit.domain.bundle import canonical_json
from syncsvc.repo_result import normalize_repository
from syncsvc.sources.local import LocalSource

DEMO_ROOT = Path(__file__).resolve().parents[2] / "examples" / "repos"
MAX_FILE_BYTES = 1024 * 1024

# Which shape each repository's .repo-context.json has (None: it has none).
SHAPES = {
    "logslice": "schema",
    "fleetpulse-dashboard": "schema",
    "leafscan": "schema",
    "zig-raytracer": "schema",
    "trailmate": "schema",
    "guildtoken": "schema",
    "orbital-salvage": "schema",
    "phoenix-huddle": "schema",
    "kube-snapshot-operator": "drifted",
    "shelfshare-api": "drifted",
    "esp32-mqtt-gateway": "drifted",
    "aws-landing-zone": "drifted",
    "clickstream-sessionizer": "drifted",
    "weather-warehouse": "drifted",
    "parsnip": "drifted",
    "homelab-ansible": None,
}
# The repositories that are meant to warn, and what about.
WARNS = {
    "phoenix-huddle": ["is not valid JSON", "read it after removing trailing commas"],
    "esp32-mqtt-gateway": ["topics: expected a list, found text"],
}
# A term each repository is the only one to mention: the demo is for judging search results.
DISTINCT = {
    "Tokio": "logslice",
    "controller-runtime": "kube-snapshot-operator",
    "TanStack": "fleetpulse-dashboard",
    "Celery": "shelfshare-api",
    "Grad-CAM": "leafscan",
    "MQTT": "esp32-mqtt-gateway",
    "Zig": "zig-raytracer",
    "Terraform": "aws-landing-zone",
    "Riverpod": "trailmate",
    "Kafka Streams": "clickstream-sessionizer",
    "LiveView": "phoenix-huddle",
    "dbt": "weather-warehouse",
    "WireGuard": "homelab-ansible",
    "Solidity": "guildtoken",
    "parser combinator": "parsnip",
    "Unity": "orbital-salvage",
}


@pytest.fixture(scope="module")
async def results() -> dict[str, dict[str, Any]]:
    source = LocalSource(DEMO_ROOT)
    results = {}
    for listing in await source.list_repositories("demo"):
        fetched = await source.fetch(
            listing, extra_files=DEFAULT_EXTRA_FILES, max_file_bytes=MAX_FILE_BYTES
        )
        result = normalize_repository(listing, fetched, max_file_bytes=MAX_FILE_BYTES).to_json()
        results[listing.full_name.removeprefix("demo/")] = result
    return results


def shape(raw: dict[str, Any]) -> str:
    manifest = raw.get("skill_manifest")
    if isinstance(manifest, dict) and "technical" in manifest:
        return "schema"
    return "drifted"


async def test_the_expected_repositories_are_listed(results: dict[str, dict[str, Any]]) -> None:
    assert len(results) >= 14
    assert set(results) == set(SHAPES)


async def test_every_repository_syncs(results: dict[str, dict[str, Any]]) -> None:
    for name, result in results.items():
        canonical_json(result)
        assert result["readme"] is not None, name
        assert result["readme"]["path"] == "README.md"
        text = result["readme"]["text"]
        assert len(text.splitlines()) >= 50, name
        for section in ("## Overview", "## Features", "## Architecture", "## Usage"):
            assert section in text, (name, section)
        if SHAPES[name] is None:
            assert result["context"] is None
            assert result["fetch"][".repo-context.json"]["status"] == "missing"
            continue
        context = result["context"]
        assert context is not None, name
        assert context["name"] == name
        for field in ("description", "type", "scope"):
            assert context[field], (name, field)
        for field in ("tech", "skills", "topics"):
            assert len(context[field]) >= 4, (name, field)


async def test_both_shapes_are_present(results: dict[str, dict[str, Any]]) -> None:
    for name, expected in SHAPES.items():
        context = results[name]["context"]
        assert (shape(context["raw"]) if context else None) == expected, name
    counts = {kind: list(SHAPES.values()).count(kind) for kind in ("schema", "drifted")}
    assert counts["schema"] >= 6 and counts["drifted"] >= 6


async def test_exactly_the_intended_repositories_warn(results: dict[str, dict[str, Any]]) -> None:
    warned = {name for name, result in results.items() if result["warnings"]}
    assert warned == set(WARNS)
    for name, fragments in WARNS.items():
        joined = "\n".join(results[name]["warnings"])
        for fragment in fragments:
            assert fragment in joined, (name, fragment)
        assert results[name]["context"] is not None  # a warning, and still what could be read


async def test_extra_files_and_faq_entries(results: dict[str, dict[str, Any]]) -> None:
    with_files = {
        name: sorted(result["files"]) for name, result in results.items() if result["files"]
    }
    assert with_files == {
        "kube-snapshot-operator": ["ARCHITECTURE.md"],
        "leafscan": ["SKILLS-INDEX.md"],
    }
    with_faq = {
        name for name, result in results.items() if result["context"] and result["context"]["faq"]
    }
    assert with_faq == {"leafscan", "orbital-salvage", "parsnip"}


async def test_each_repository_has_distinct_vocabulary(results: dict[str, dict[str, Any]]) -> None:
    texts = {
        name: result["readme"]["text"] + canonical_json(result["context"]).decode()
        for name, result in results.items()
    }
    for term, owner in DISTINCT.items():
        pattern = re.compile(rf"\b{re.escape(term)}\b", re.IGNORECASE)
        mentioned = {name for name, text in texts.items() if pattern.search(text)}
        assert mentioned == {owner}, term
