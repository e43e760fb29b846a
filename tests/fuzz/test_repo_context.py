"""The tolerant `.repo-context.json` reader under any input: it never raises, its output
always encodes as canonical JSON, and its caps hold."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meshkit.domain.bundle import canonical_json
from syncsvc import repo_context
from syncsvc.repo_context import parse_repo_context
from tests.fuzz.strategies import context_documents, context_files, json_values

MAX_BYTES = 256 * 1024


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def check(data: bytes) -> None:
    parsed = parse_repo_context(data, max_bytes=MAX_BYTES)
    assert parsed == parse_repo_context(data, max_bytes=MAX_BYTES)  # deterministic
    assert len(parsed.warnings) <= repo_context.MAX_WARNINGS + 1
    canonical_json(list(parsed.warnings))
    if parsed.context is None:
        return
    context = parsed.context
    encoded = canonical_json(context)  # raises on anything UTF-8 or JSON cannot hold
    assert json.loads(encoded) == context
    assert depth(context["raw"]) <= repo_context.MAX_RAW_DEPTH
    for field in ("name", "type", "scope"):
        assert context[field] is None or 0 < len(context[field]) <= repo_context.MAX_ITEM_CHARS
    description = context["description"]
    assert description is None or len(description) <= repo_context.MAX_TEXT_CHARS
    for field, cap in (
        ("tech", repo_context.MAX_TECH),
        ("skills", repo_context.MAX_SKILLS),
        ("topics", repo_context.MAX_TOPICS),
    ):
        items = context[field]
        assert len(items) <= cap
        assert all(isinstance(i, str) and 0 < len(i) <= repo_context.MAX_ITEM_CHARS for i in items)
        assert len({i.casefold() for i in items}) == len(items)
    assert len(context["components"]) <= repo_context.MAX_COMPONENTS
    for component in context["components"]:
        assert 0 < len(component["name"]) <= repo_context.MAX_ITEM_CHARS
        assert len(component["description"]) <= repo_context.MAX_TEXT_CHARS
    assert len(context["faq"]) <= repo_context.MAX_FAQ
    for pair in context["faq"]:
        assert 0 < len(pair["question"]) <= repo_context.MAX_TEXT_CHARS
        assert 0 < len(pair["answer"]) <= repo_context.MAX_TEXT_CHARS


@given(context_files())
def test_any_file_reads_without_raising_and_encodes(data: bytes) -> None:
    check(data)


@given(context_documents())
def test_any_shaped_document_is_read_within_its_caps(document: dict[str, Any]) -> None:
    check(json.dumps(document).encode())  # ASCII: surrogates arrive as \\ud800 escapes


@given(json_values(), st.integers(1, 4096))
def test_a_file_over_the_limit_is_a_warning(document: Any, limit: int) -> None:
    data = json.dumps(document).encode()
    parsed = parse_repo_context(data, max_bytes=limit)
    if len(data) > limit:
        assert parsed.context is None and "too large" in parsed.warnings[0]
    else:
        assert parsed == parse_repo_context(data, max_bytes=MAX_BYTES)
