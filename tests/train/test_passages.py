"""A bundle's repositories become short, labelled passages, deterministically."""

from __future__ import annotations

from meshkit.domain.documents import Readme, RepositoryMetadata, RepositoryResult
from meshkit.domain.passages import (
    MAX_PASSAGE_CHARS,
    MAX_PASSAGES_PER_REPOSITORY,
    Passage,
    bundle_passages,
    markdown_sections,
    name_words,
    passages_from_json,
    passages_of,
    passages_to_json,
    repository_facts,
)
from tests.train.support import repo, sample_bundle

README = """# Tool

Intro line of the tool that says what it is.

## Install

```sh
# not a heading: inside a code fence
pip install tool
```

Run the [installer](https://example.com) with **care**.

Usage
-----

- first item of the list
  continues on the next line
- second item

| a | b |
|---|---|
| 1 | 2 |
"""


def test_markdown_is_split_at_headings_without_code() -> None:
    sections = markdown_sections(README, "README")
    assert [s.heading for s in sections] == ["Tool", "Install", "Usage"]
    install = sections[1].text
    assert "pip install" not in install and "not a heading" not in install
    assert install == "Run the installer with care."
    usage = sections[2].text
    assert "first item of the list continues on the next line; second item" in usage
    assert "a, b" in usage and "1, 2" in usage


def test_every_source_becomes_a_labelled_passage() -> None:
    facts = repository_facts(
        repo(
            "demo-tool",
            description="Does one thing well.",
            tech=["Rust", "Tokio"],
            skills=["Async I/O"],
            topics=["cli-tools"],
            components=[("parser", "Parses the input.")],
            faq=[("Why Rust?", "Speed and safety.")],
            readme=README,
            files={"ARCHITECTURE.md": "# Design\n\nThe design is a pipeline of stages.\n"},
        )
    )
    sources = [p.source for p in passages_of(facts)]
    assert sources == [
        "description",
        "tech stack",
        "skills",
        "topics",
        "component: parser",
        "FAQ: Why Rust?",
        "README: Tool",
        "README: Install",
        "README: Usage",
        "ARCHITECTURE.md: Design",
    ]
    assert facts.topics == ("cli tools",)
    assert facts.terms == ("demo-tool", "Rust", "Tokio", "cli tools")


def test_long_text_is_cut_into_bounded_passages() -> None:
    paragraph = " ".join(f"Sentence number {i} about streaming logs." for i in range(200))
    facts = repository_facts(repo("big", description="Big.", readme=f"# Big\n\n{paragraph}\n"))
    passages = passages_of(facts)
    assert len(passages) > 5
    assert all(len(p.text) <= MAX_PASSAGE_CHARS for p in passages)
    readme = " ".join(p.text for p in passages if p.source == "README: Big")
    assert readme == paragraph  # cut at sentence ends, nothing lost


def test_a_huge_readme_is_capped_and_an_empty_repository_still_has_its_name() -> None:
    huge = "".join(f"## Part {i}\n\nSome text about part {i} of it.\n\n" for i in range(500))
    assert len(passages_of(repository_facts(repo("huge", description="x", readme=huge)))) == (
        MAX_PASSAGES_PER_REPOSITORY
    )
    empty = {"repository": "alice/empty", "context": None, "readme": None, "files": {}}
    assert passages_of(repository_facts(RepositoryResult.from_json(empty))) == [
        Passage("alice/empty", "name", "empty (alice/empty)")
    ]


def test_passages_are_deterministic_and_round_trip_as_json() -> None:
    first, second = bundle_passages(sample_bundle()), bundle_passages(sample_bundle())
    assert first == second
    repositories = [p.repository for p in first]
    assert repositories == sorted(repositories, key=str.lower)  # grouped, in bundle order
    assert passages_from_json(passages_to_json(first)) == first


def test_a_name_reads_as_words_whatever_its_case_or_separators() -> None:
    assert name_words("fleet_pulse-dashboard") == "fleet pulse dashboard"
    assert name_words("FleetPulseAPI") == "fleet pulse API"
    assert name_words("HTTPServer.v2") == "HTTP server v2"
    assert name_words("esp32-k8s-tools") == "esp32 k8s tools"


def _thin(files: dict[str, str] | None = None, readme: str = "# StarChart\n\nMy star map.") -> str:
    """The passage texts of a repository with no context file and a one-line README."""
    result = RepositoryResult(
        repository="alice/StarChart",
        fingerprint="sha256:x",
        default_branch="main",
        metadata=RepositoryMetadata(language="Rust", topics=("night-sky", "astronomy")),
        readme=Readme("README.md", readme),
        files=files or {},
    )
    return " | ".join(f"{p.source}: {p.text}" for p in passages_of(repository_facts(result)))


def test_a_thin_repository_is_described_by_its_name_language_and_topics() -> None:
    assert "name: star chart (alice/StarChart), a Rust repository about night sky, astronomy" in (
        _thin()
    )
    long_readme = "# StarChart\n\n" + "Draws the night sky for any place and date. " * 10
    assert "name: " not in _thin(readme=long_readme)  # a real README needs no stand-in
    assert "name: " not in " ".join(
        p.source for p in passages_of(repository_facts(repo("starchart", description="Maps.")))
    )  # nor does a repository with a context file


def test_package_manifests_give_a_description_and_keywords_not_markdown() -> None:
    passages = _thin(
        {
            "package.json": '{"description": "Plots constellations.", "keywords": ["stars"]}',
            "pyproject.toml": '[project]\ndescription = "Sky charts"\nkeywords = ["orbits"]\n',
            "Cargo.toml": '[package]\ndescription = "Planetarium"\ncategories = ["science"]\n',
            "ARCHITECTURE.md": "## Layers\n\nA renderer over a star catalogue, in layers.",
        }
    )
    for text in ("StarChart: Planetarium", "StarChart: Plots constellations.", "StarChart: Sky"):
        assert text in passages
    assert "Topics of StarChart: night sky, astronomy, science, stars, orbits." in passages
    assert "ARCHITECTURE.md: Layers" in passages
    assert "package.json:" not in passages and "[project]" not in passages


def test_a_manifest_that_does_not_parse_adds_nothing() -> None:
    broken = _thin({"package.json": "{not json", "Cargo.toml": "= nope", "pyproject.toml": "[]"})
    assert broken == _thin()
