"""The tolerant `.repo-context.json` reader: both shapes, camelCase, and every kind of bad
input turned into warnings instead of exceptions."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from meshkit.domain.bundle import canonical_json
from syncsvc.repo_context import (
    MAX_ITEM_CHARS,
    MAX_RAW_DEPTH,
    MAX_SKILLS,
    MAX_TEXT_CHARS,
    MAX_WARNINGS,
    ParsedContext,
    parse_repo_context,
)

DATA = Path(__file__).parent / "data"
LIMIT = 1024 * 1024
CONTEXT_KEYS = {
    "name",
    "description",
    "type",
    "scope",
    "tech",
    "skills",
    "topics",
    "components",
    "faq",
    "raw",
}


def parse(document: Any) -> ParsedContext:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    return parse_repo_context(data, max_bytes=LIMIT)


def nesting(value: Any) -> int:
    """How many containers deep value goes."""
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    return 0


def context_of(document: Any) -> dict[str, Any]:
    parsed = parse(document)
    assert parsed.context is not None, parsed.warnings
    return parsed.context


# --- the two shapes -----------------------------------------------------------------------


def test_schema_shape_is_read_completely_without_warnings() -> None:
    data = (DATA / "schema.repo-context.json").read_bytes()
    parsed = parse_repo_context(data, max_bytes=LIMIT)
    assert parsed.warnings == ()
    context = parsed.context
    assert context is not None
    assert set(context) == CONTEXT_KEYS
    assert context["name"] == "tidepool"
    assert context["description"] == "A tide-prediction service built on harmonic analysis."
    assert context["type"] == "project"
    assert context["scope"] == "backend"
    # primary first, then secondary, libraries, tools, tests; "python" repeats "Python".
    assert context["tech"] == [
        "Python",
        "FastAPI",
        "PostgreSQL",
        "NumPy",
        "SciPy",
        "uv",
        "pytest",
        "Hypothesis",
    ]
    assert context["skills"] == [
        "Harmonic analysis",
        "REST API design",
        "oceanography",
        "Technical writing",
    ]
    assert context["topics"] == ["tides", "oceanography", "fastapi", "science"]
    assert context["components"] == [
        {"name": "predictor", "description": "Sums tidal constituents into a water-level curve."},
        {"name": "api", "description": "HTTP endpoints for stations and predictions."},
    ]
    assert context["faq"] == []
    assert context["raw"] == json.loads(data)


def test_drifted_shape_is_read_and_unknown_sections_are_kept() -> None:
    data = (DATA / "drifted.repo-context.json").read_bytes()
    parsed = parse_repo_context(data, max_bytes=LIMIT)
    assert parsed.warnings == ()
    context = parsed.context
    assert context is not None
    assert context["name"] == "lanternfish"
    assert context["type"] == "course-portfolio"  # outside the schema's enum: kept as written
    assert context["scope"] == "full-stack web development"
    assert context["tech"] == ["JavaScript", "Node.js", "Express", "Open trail data"]
    # categories name groups, not skills; a domain entry names both a skill and applications.
    assert context["skills"] == [
        "Routing with Express",
        "Session handling",
        "DOM manipulation",
        "Fetch API",
        "Web accessibility",
        "ARIA landmarks",
        "Keyboard navigation",
        "Code review",
        "HTTP request lifecycle",
        "Deploying Node.js services",
    ]
    assert context["faq"] == [
        {
            "question": "Which exercise is the capstone?",
            "answer": "The trail-finder app in capstone/.",
        }
    ]
    raw = context["raw"]
    assert raw == json.loads(data)
    for section in ("$schema", "learning_outcomes", "educational_context", "metadata"):
        assert section in raw


def test_camel_case_sections_and_fields() -> None:
    context = context_of(
        {
            "projectIdentity": {"name": "Kestrel", "Description": "A drone telemetry viewer."},
            "techStack": {"Primary": ["Kotlin"], "keyLibraries": ["Ktor"]},
            "skillManifest": {"technicalSkills": ["Coroutines"], "softSkills": ["Mentoring"]},
            "skillLevel": "beginner-to-advanced",
            "outcomes": {"technicalSkills": ["Flow operators", "coroutines"]},
            "projectStructure": {
                "architecture_pattern": "layered",
                "keyFiles": [{"path": "app/Main.kt", "purpose": "Entry point"}],
            },
        }
    )
    assert context["name"] == "Kestrel"
    assert context["description"] == "A drone telemetry viewer."
    assert context["tech"] == ["Kotlin", "Ktor"]
    assert context["skills"] == ["Coroutines", "Mentoring", "Flow operators"]
    assert context["components"] == [{"name": "app/Main.kt", "description": "Entry point"}]
    assert context["raw"]["skillLevel"] == "beginner-to-advanced"


def test_components_in_list_and_text_shapes() -> None:
    context = context_of(
        {
            "components": [
                "scheduler",
                {"name": "worker", "responsibility": "Runs jobs"},
                {"description": "no name"},
                {"name": "Scheduler", "description": "a repeat, ignored"},
            ],
            "architecture": {"components": {"queue": "Holds pending jobs"}},
        }
    )
    assert context["components"] == [
        {"name": "scheduler", "description": ""},
        {"name": "worker", "description": "Runs jobs"},
        {"name": "queue", "description": "Holds pending jobs"},
    ]


def test_faq_pairs_are_collected_from_anywhere() -> None:
    context = context_of(
        {
            "faq": [
                {"question": "Why Rust?", "answer": "Predictable latency."},
                {"Q": "why rust?", "A": "A repeat, dropped."},
            ],
            "design_notes": {"questions": [{"q": "Is it async?", "a": "Yes, on Tokio."}]},
            "FAQs": {"Does it run on Windows?": "Yes.", "Broken": 3},
        }
    )
    assert context["faq"] == [
        {"question": "Why Rust?", "answer": "Predictable latency."},
        {"question": "Is it async?", "answer": "Yes, on Tokio."},
        {"question": "Does it run on Windows?", "answer": "Yes."},
    ]


def test_name_and_topics_fall_back_to_other_places() -> None:
    context = context_of(
        {
            "name": "top-level-name",
            "summary": "Top-level summary.",
            "keywords": ["a", "b"],
            "metadata": {"tags": ["b", "c"], "primary_language": "Go"},
        }
    )
    assert context["name"] == "top-level-name"
    assert context["description"] == "Top-level summary."
    assert context["topics"] == ["a", "b", "c"]
    assert context["tech"] == ["Go"]


# --- cleaning and caps --------------------------------------------------------------------


def test_strings_are_trimmed_deduplicated_and_capped() -> None:
    long_item = "x" * (MAX_ITEM_CHARS + 50)
    context = context_of(
        {
            "project_identity": {"name": "  spaced\t\tname \n", "description": "d" * 5000},
            "tech_stack": {"primary": ["Go", " go ", "", "   ", "G\u0000o\u0007", long_item]},
        }
    )
    assert context["name"] == "spaced name"
    assert context["description"] == "d" * MAX_TEXT_CHARS
    assert context["tech"] == ["Go", "G o", "x" * MAX_ITEM_CHARS]


def test_long_lists_are_capped_with_a_warning() -> None:
    skills = [f"skill {index}" for index in range(MAX_SKILLS + 25)]
    parsed = parse({"skill_manifest": {"technical": skills}})
    assert parsed.context is not None
    assert parsed.context["skills"] == skills[:MAX_SKILLS]
    assert parsed.warnings == (
        f".repo-context.json: kept the first {MAX_SKILLS} skills, dropped 25 more",
    )


def test_warnings_are_capped() -> None:
    parsed = parse({"name": "n", "skill_manifest": {"technical": [True] * 5 + list(range(40))}})
    assert len(parsed.warnings) == MAX_WARNINGS + 1
    assert parsed.warnings[-1] == ".repo-context.json: 25 more problems not listed"


# --- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "warning"),
    [
        (
            b'{\n  "a": 1\n    "b": 2\n}',
            ".repo-context.json is not valid JSON: Expecting ',' delimiter at line 3 column 5",
        ),
        (b"", ".repo-context.json is empty"),
        (b" \n\t ", ".repo-context.json is empty"),
        (b"[1, 2]", ".repo-context.json must hold a JSON object at the top level, found a list"),
        (b'"text"', ".repo-context.json must hold a JSON object at the top level, found text"),
        (b"42", ".repo-context.json must hold a JSON object at the top level, found a number"),
        (b"null", ".repo-context.json must hold a JSON object at the top level, found null"),
        (b"[" * 100_000 + b"]" * 100_000, ".repo-context.json is nested too deeply to read"),
        (b"{'single': 'quotes'}", None),
        (b"\x00\x01\x02", None),
    ],
    ids=[
        "missing-comma",
        "empty",
        "blank",
        "list",
        "string",
        "number",
        "null",
        "too-deep",
        "single-quotes",
        "binary",
    ],
)
def test_unreadable_documents_give_no_context_and_one_clear_warning(
    data: bytes, warning: str | None
) -> None:
    parsed = parse_repo_context(data, max_bytes=LIMIT)
    assert parsed.context is None
    assert len(parsed.warnings) == 1
    if warning is not None:
        assert parsed.warnings[0] == warning
    else:
        assert parsed.warnings[0].startswith(".repo-context.json is not valid JSON: ")


def test_oversized_input_is_not_parsed() -> None:
    data = json.dumps({"project_identity": {"name": "big", "description": "x" * 200}}).encode()
    parsed = parse_repo_context(data, max_bytes=100)
    assert parsed.context is None
    assert parsed.warnings == (
        f".repo-context.json is too large: {len(data)} bytes, the limit is 100",
    )


def test_trailing_commas_and_comments_are_forgiven_with_a_warning() -> None:
    data = b"""{
  // hand-written
  "project_identity": {"name": "comma, \\"quoted\\" // not a comment", /* note */},
  "topics": ["a", "b",],
}"""
    parsed = parse_repo_context(data, max_bytes=LIMIT)
    assert parsed.context is not None
    assert parsed.context["name"] == 'comma, "quoted" // not a comment'
    assert parsed.context["topics"] == ["a", "b"]
    assert parsed.warnings == (
        ".repo-context.json is not valid JSON: Expecting property name enclosed in double quotes "
        "at line 2 column 3; "
        "read it after removing trailing commas and comments",
    )


def test_invalid_utf8_is_replaced_and_the_rest_is_read() -> None:
    data = b'{"project_identity": {"name": "caf\xe9", "description": "ok"}}'
    parsed = parse_repo_context(data, max_bytes=LIMIT)
    assert parsed.context is not None
    assert parsed.context["name"] == "caf\ufffd"
    assert parsed.context["description"] == "ok"
    assert parsed.warnings == (
        ".repo-context.json is not valid UTF-8 (byte 34: invalid continuation byte); "
        "undecodable bytes were replaced",
    )


def test_a_byte_order_mark_is_accepted() -> None:
    parsed = parse_repo_context(b'\xef\xbb\xbf{"name": "bom"}', max_bytes=LIMIT)
    assert parsed.context is not None
    assert parsed.context["name"] == "bom"
    assert parsed.warnings == ()


def test_wrong_types_are_warnings_and_the_rest_is_kept() -> None:
    parsed = parse(
        {
            "project_identity": {"name": None, "description": 42, "type": ["x"], "scope": "ok"},
            "tech_stack": {"primary": "Rust, Tokio; serde", "secondary": 7, "key_libraries": None},
            "skill_manifest": {"technical": "One skill, with a comma", "domain": [True, "x"]},
            "topics": {"no": "name"},
            "components": 12,
            "outcomes": "text",
        }
    )
    context = parsed.context
    assert context is not None
    assert context["name"] is None
    assert context["description"] is None
    assert context["scope"] == "ok"
    assert context["tech"] == ["Rust", "Tokio", "serde"]
    assert context["skills"] == ["One skill, with a comma", "x"]
    assert context["topics"] == []
    assert context["components"] == []
    prefix = ".repo-context.json: "
    assert parsed.warnings == tuple(
        prefix + warning
        for warning in (
            "project_identity.name: expected text, found null",
            "project_identity.description: expected text, found a number",
            "project_identity.type: expected text, found a list",
            "tech_stack.primary: expected a list, found text; split it at commas",
            "tech_stack.secondary: expected a list, found a number",
            "tech_stack.key_libraries: expected a list, found null",
            "skill_manifest.technical: expected a list, found text; kept it as one item",
            "skill_manifest.domain[0]: expected text, found a boolean",
            "outcomes: expected an object, found text",
            "topics: expected text or a named entry, found an object without a name",
            "components: expected an object or a list, found a number",
        )
    )


def test_a_section_of_the_wrong_type_is_a_warning() -> None:
    parsed = parse({"project_identity": "just text", "tech_stack": ["Go"]})
    assert parsed.context is not None
    assert parsed.context["name"] is None
    assert parsed.context["tech"] == ["Go"]
    assert parsed.warnings == (
        ".repo-context.json: project_identity: expected an object, found text",
    )


def test_deeply_nested_junk_is_cut() -> None:
    deep: Any = "bottom"
    for _ in range(200):
        deep = {"d": [deep]}
    parsed = parse({"name": "n", "junk": deep, "tech_stack": {"primary": [[[[["too deep"]]]]]}})
    context = parsed.context
    assert context is not None
    assert context["name"] == "n"
    assert context["tech"] == []
    assert nesting(context["raw"]) <= MAX_RAW_DEPTH
    canonical_json(context)  # serializable whatever the input
    too_deep = (
        ".repo-context.json: tech_stack.primary[0][0][0][0]: lists nested too deeply; skipped"
    )
    assert too_deep in parsed.warnings
    assert (
        f".repo-context.json: parts nested deeper than {MAX_RAW_DEPTH} levels were dropped"
        in parsed.warnings
    )


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_become_null(literal: bytes) -> None:
    parsed = parse_repo_context(b'{"name": "n", "x": ' + literal + b"}", max_bytes=LIMIT)
    assert parsed.context is not None
    assert parsed.context["raw"] == {"name": "n", "x": None}
    assert len(parsed.warnings) == 1
    canonical_json(parsed.context)


def test_an_integer_too_long_to_convert_is_a_warning() -> None:
    parsed = parse_repo_context(b'{"x": ' + b"9" * 5000 + b"}", max_bytes=LIMIT)
    assert parsed.context is None
    assert parsed.warnings == (
        ".repo-context.json is not valid JSON: a number has too many digits",
    )


def test_an_object_with_nothing_understood_is_kept_as_raw_with_a_warning() -> None:
    parsed = parse({"whatever": {"nested": [1, 2, 3]}})
    assert parsed.context is not None
    assert parsed.context["raw"] == {"whatever": {"nested": [1, 2, 3]}}
    assert parsed.warnings == (
        ".repo-context.json has none of the sections this reader understands "
        "(project_identity, tech_stack, skill_manifest, topics); kept it as raw",
    )


# --- determinism and robustness -----------------------------------------------------------


def test_same_bytes_give_the_same_result() -> None:
    for name in ("schema.repo-context.json", "drifted.repo-context.json"):
        data = (DATA / name).read_bytes()
        first = parse_repo_context(data, max_bytes=LIMIT)
        second = parse_repo_context(data, max_bytes=LIMIT)
        assert first == second
        assert canonical_json(first.context) == canonical_json(second.context)


def test_mutated_files_never_raise_and_always_serialize() -> None:
    rng = random.Random(20261128)
    seeds = [
        (DATA / name).read_bytes()
        for name in ("schema.repo-context.json", "drifted.repo-context.json")
    ]
    for _ in range(400):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            action = rng.random()
            if action < 0.4:
                data[position] = rng.randrange(256)
            elif action < 0.7:
                del data[position : position + rng.randint(1, 20)]
            else:
                data[position:position] = rng.choice([b",", b"]", b"{", b'"', b"null", b"[["])
        parsed = parse_repo_context(bytes(data), max_bytes=LIMIT)
        assert parsed.context is not None or parsed.warnings
        canonical_json(parsed.context)
        assert all(isinstance(warning, str) for warning in parsed.warnings)
