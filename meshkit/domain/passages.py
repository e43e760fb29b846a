"""A bundle's repositories as passages: short, labelled pieces of text that search ranks.

Search scores passages, not whole repositories: one embedding per repository blurs a README
about five things into none of them, while a passage ("README: Deep sleep", "tech stack")
matches one need and can be shown as the reason for a hit. Training pairs and the held-out
evaluation are built from the same passages, so a model is tuned on exactly what it serves.

Pure Python (no torch, no numpy; markdown-it-py reads the markdown): trainsvc and searchsvc
both use it and must not import each other. Every function is deterministic: the same bundle
gives the same passages in the same order, which is what lets trainsvc store passage
embeddings that searchsvc reuses.

Per repository, in this order (earlier sources survive the per-repository cap):
    description            "<name>: <description>" (context, else GitHub's description)
    tech stack             the technologies, one passage
    skills                 the skills, in passages of at most MAX_PASSAGE_CHARS
    topics                 context and GitHub topics
    component: <name>      one per component with its description
    FAQ: <question>        one per FAQ entry, question and answer
    README: <heading>      one per README section (split further when long)
    <file>: <heading>      the same for each extra file (ARCHITECTURE.md, SKILLS-INDEX.md)
    name                   a thin repository only (below): its name in words, language, topics
A package manifest (pyproject.toml, package.json, Cargo.toml: sync reads them for every thin
repository, and any configured as an extra file) is not markdown: its description joins the
descriptions and its keywords the topics.

A thin repository (no .repo-context.json and a README of a line or two) would otherwise be
matched on a dozen words; its "name" passage states what its name, language and topics say
("fleet-pulse" and "FleetPulse" read as "fleet pulse"). A repository with no text at all gets
that passage too, so it can be found by name.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from meshkit.domain.documents import (
    Bundle,
    RepositoryContext,
    RepositoryMetadata,
    RepositoryResult,
)

__all__ = [
    "MAX_PASSAGES_PER_REPOSITORY",
    "MAX_PASSAGE_CHARS",
    "PASSAGES_FORMAT",
    "Passage",
    "RepositoryFacts",
    "Section",
    "bundle_facts",
    "bundle_passages",
    "clean_markdown",
    "markdown_sections",
    "name_words",
    "passages_from_json",
    "passages_of",
    "passages_to_json",
    "repository_facts",
    "split_text",
]

PASSAGES_FORMAT = "contextmesh.passages/v1"
MAX_PASSAGE_CHARS = 600
"""About 130 word pieces: inside the model's window, and short enough to name one thing."""
MAX_PASSAGES_PER_REPOSITORY = 48
"""Bounds the index and the training set for repositories with huge READMEs."""
MAX_SECTION_SOURCE_CHARS = 80
_MIN_SECTION_CHARS = 20
"""Shorter sections ("See LICENSE.") carry nothing worth ranking."""
THIN_README_CHARS = 300
"""A README shorter than this (cleaned) says little more than the repository's name."""
MANIFESTS = ("pyproject.toml", "package.json", "Cargo.toml")
"""Package manifests read for a description and keywords when they are among the files."""


@dataclass(frozen=True)
class Passage:
    """A piece of a repository's text, with where it came from."""

    repository: str
    """owner/name."""
    source: str
    """Where the text came from: 'description', 'skills', 'README: Usage', ..."""
    text: str


@dataclass(frozen=True)
class Section:
    """A heading and the text under it, from a README or an extra file."""

    document: str
    """'README' or the file's path."""
    heading: str
    text: str


@dataclass(frozen=True)
class RepositoryFacts:
    """What one repository of a bundle says about itself, cleaned and de-duplicated."""

    repository: str
    name: str
    description: str | None
    descriptions: tuple[str, ...]
    """Every distinct description (context first, then GitHub's)."""
    tech: tuple[str, ...]
    skills: tuple[str, ...]
    topics: tuple[str, ...]
    components: tuple[tuple[str, str], ...]
    """(name, description) pairs."""
    faq: tuple[tuple[str, str], ...]
    """(question, answer) pairs."""
    sections: tuple[Section, ...] = field(default=())
    language: str | None = None
    """The language GitHub reports."""
    thin: bool = False
    """No .repo-context.json and next to no README: see the module docstring."""

    @property
    def terms(self) -> tuple[str, ...]:
        """Names a query may use verbatim: the repository's name, technologies and topics."""
        return _unique([self.name, *self.tech, *self.topics])


def bundle_facts(bundle: Bundle) -> list[RepositoryFacts]:
    """The facts of every repository of a bundle, in bundle order."""
    return [repository_facts(entry.result) for entry in bundle.repositories]


def bundle_passages(bundle: Bundle) -> list[Passage]:
    """Every passage of a bundle, grouped by repository in bundle order."""
    return [p for facts in bundle_facts(bundle) for p in passages_of(facts)]


def repository_facts(result: RepositoryResult) -> RepositoryFacts:
    """What one repository result says, cleaned: whitespace collapsed, repeats dropped."""
    context = result.context or RepositoryContext()
    metadata = result.metadata or RepositoryMetadata()
    name = _text(context.name) or result.repository.rsplit("/", 1)[-1]
    manifests = [
        _manifest(path, body) for path, body in sorted(result.files.items()) if _is_manifest(path)
    ]
    descriptions = _unique(
        [_text(context.description), _text(metadata.description)]
        + [description for description, _ in manifests]
    )
    keywords = [keyword for _, words in manifests for keyword in words]
    topics = _unique([_topic(t) for t in _texts([*context.topics, *metadata.topics, *keywords])])
    tech = _texts(context.tech)
    language = _text(metadata.language)
    if language:
        tech = [*tech, language]
    sections: list[Section] = []
    readme = result.readme.text if result.readme is not None else ""
    if readme.strip():
        sections += markdown_sections(readme, "README")
    for path in sorted(result.files):
        if result.files[path].strip() and not _is_manifest(path):
            sections += markdown_sections(result.files[path], path)
    return RepositoryFacts(
        repository=result.repository,
        name=name,
        description=descriptions[0] if descriptions else None,
        descriptions=descriptions,
        tech=_unique(tech),
        skills=_unique(_texts(context.skills)),
        topics=topics,
        components=tuple(_pairs((c.name, c.description) for c in context.components)),
        faq=tuple(_pairs((f.question, f.answer) for f in context.faq)),
        sections=tuple(sections),
        language=language,
        thin=is_thin(has_context=result.context is not None, readme=readme),
    )


def is_thin(*, has_context: bool, readme: str) -> bool:
    """Whether a repository says too little to match on: no .repo-context.json and a README of
    a line or two. Sync then also reads its package manifests (MANIFESTS)."""
    return not has_context and len(clean_markdown(readme)) < THIN_README_CHARS


def name_words(name: str) -> str:
    """A repository name as words: 'fleet_pulse-API' and 'FleetPulseAPI' -> 'fleet pulse API';
    an all-capitals run stays one word ('HTTPServer' -> 'HTTP server')."""
    words = []
    for part in re.split(r"[\W_]+", name):
        for word in _CAMEL_WORD.findall(part):
            words.append(word if word.isupper() and len(word) > 1 else word.lower())
    return " ".join(words)


_CAMEL_WORD = re.compile(r"[A-Z]+\d*(?![a-z])|[A-Z]?[a-z]+(?:\d+[a-z]*)*|\d+[a-z]*")


def passages_of(facts: RepositoryFacts) -> list[Passage]:
    """The passages of one repository, at most MAX_PASSAGES_PER_REPOSITORY of them."""
    out: list[Passage] = []

    def add(source: str, text: str) -> None:
        for piece in split_text(text, MAX_PASSAGE_CHARS):
            out.append(Passage(facts.repository, source, piece))

    for index, description in enumerate(facts.descriptions):
        add("description" if index == 0 else "GitHub description", f"{facts.name}: {description}")
    if facts.tech:
        add("tech stack", f"{facts.name} is built with " + ", ".join(facts.tech) + ".")
    if facts.skills:
        add("skills", f"Skills shown in {facts.name}: " + "; ".join(facts.skills) + ".")
    if facts.topics:
        add("topics", f"Topics of {facts.name}: " + ", ".join(facts.topics) + ".")
    for component, description in facts.components:
        add(f"component: {component}", f"{component} ({facts.name}): {description}")
    for question, answer in facts.faq:
        add(f"FAQ: {question}"[:MAX_SECTION_SOURCE_CHARS], f"{question} {answer}")
    for section in facts.sections:
        label = f"{section.document}: {section.heading}" if section.heading else section.document
        add(label[:MAX_SECTION_SOURCE_CHARS], section.text)
    if facts.thin or not out:
        out.append(Passage(facts.repository, "name", _name_text(facts)))
    return out[:MAX_PASSAGES_PER_REPOSITORY]


def _name_text(facts: RepositoryFacts) -> str:
    """What a thin repository's name, language and topics say: 'fleet pulse (owner/FleetPulse),
    a Go repository about telemetry, dashboards'."""
    text = f"{name_words(facts.name) or facts.name} ({facts.repository})"
    if facts.language:
        text += f", a {facts.language} repository"
    if facts.topics:
        text += (" about " if facts.language else ", about ") + ", ".join(facts.topics)
    return text


# Markdown, read from markdown-it's token stream (CommonMark with tables)

_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable("table")
_HTML_TAG = re.compile(r"<!--.*?-->|<[^>]*>", re.DOTALL)


@dataclass(frozen=True)
class _Block:
    """A heading, or a clause of text (a paragraph, a list item's paragraph, a table row),
    with the lines [start, end) it spans in the source."""

    text: str
    start: int
    end: int
    heading: bool = False


def markdown_sections(text: str, document: str) -> list[Section]:
    """Split markdown at its headings (ATX and setext); code blocks, fenced or indented, are
    dropped (commands and diagrams rank badly and read worse as a hit's passage). Text before
    the first heading gets the heading ''; a heading with no text of its own (a top-level
    title) is dropped."""
    sections: list[Section] = []
    heading = ""
    body: list[_Block] = []

    def flush() -> None:
        cleaned = _plain_text(body)
        if len(cleaned) >= _MIN_SECTION_CHARS:
            sections.append(Section(document, heading, cleaned))

    for block in _blocks(text):
        if block.heading:
            flush()
            heading, body = block.text[:MAX_SECTION_SOURCE_CHARS], []
        else:
            body.append(block)
    flush()
    return sections


def clean_markdown(text: str) -> str:
    """Markdown as plain sentences: links and images to their text, no HTML, emphasis or code
    blocks; list items and table rows joined as clauses, paragraphs apart."""
    return _plain_text(list(_blocks(text)))


def _plain_text(blocks: list[_Block]) -> str:
    """Blocks on adjacent lines are joined as clauses of one paragraph (an introduction and
    the list under it, the rows of a table); a blank line between blocks starts a new one."""
    paragraphs: list[list[str]] = []
    end = -1
    for block in blocks:
        if block.start != end or not paragraphs:
            paragraphs.append([])
        paragraphs[-1].append(block.text)
        end = block.end
    return "\n\n".join(_join_clauses(items) for items in paragraphs)


def _blocks(text: str) -> Iterator[_Block]:
    """The headings and clauses of markdown text, in order; fences, indented code, rules and
    the tags of HTML blocks yield nothing."""
    tokens = _MARKDOWN.parse(text)
    cells: list[str] = []
    row: list[int] | None = None
    for index, token in enumerate(tokens):
        if token.type == "inline" and (clause := _inline_text(token)):
            opener = tokens[index - 1]  # what holds it: a heading, paragraph or table cell
            if opener.type in ("heading_open", "paragraph_open") and opener.map is not None:
                start, end = opener.map
                yield _Block(clause, start, end, heading=opener.type == "heading_open")
            elif opener.type in ("th_open", "td_open"):
                cells.append(clause)
        elif token.type == "tr_open":
            cells, row = [], token.map
        elif token.type == "tr_close" and cells and row is not None:
            yield _Block(", ".join(cells), row[0], row[1])
        elif token.type == "html_block" and token.map is not None:
            clause = _one_line(_HTML_TAG.sub(" ", token.content))
            if clause:
                yield _Block(clause, token.map[0], token.map[1])


def _inline_text(token: Token) -> str:
    """An inline token's text: emphasis and link markup gone, images as their alt text,
    inline HTML as a space."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak", "html_inline"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_inline_text(child))
    return _one_line("".join(parts))


def _join_clauses(items: list[str]) -> str:
    """Clauses as one sentence: '; ' between them unless a clause ends its own sentence."""
    joined = items[0]
    for item in items[1:]:
        joined += (" " if joined.endswith((".", "!", "?", ":", ";")) else "; ") + item
    return joined


# Splitting long text

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def split_text(text: str, limit: int) -> Iterator[str]:
    """text in pieces of at most limit characters, cut at paragraphs, then sentences, then
    words; paragraphs are packed together while they fit."""
    text = text.strip()
    if not text:
        return
    if len(text) <= limit:
        yield _one_line(text)
        return
    units: list[str] = []
    for paragraph in text.split("\n\n"):
        paragraph = _one_line(paragraph)
        if len(paragraph) <= limit:
            units.append(paragraph)
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            units += _cut_words(sentence, limit)
    yield from _pack(units, limit)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cut_words(text: str, limit: int) -> list[str]:
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind(" ", 0, limit + 1)
        cut = cut if cut > limit // 2 else limit
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces


def _pack(units: Iterable[str], limit: int) -> Iterator[str]:
    current = ""
    for unit in units:
        if current and len(current) + 1 + len(unit) > limit:
            yield current
            current = unit
        else:
            current = f"{current} {unit}" if current else unit
    if current:
        yield current


# Stored form (beside a model's passage embeddings)


def passages_to_json(passages: Iterable[Passage]) -> dict[str, Any]:
    """The JSON document stored beside passage embeddings, row i describing row i."""
    return {
        "format": PASSAGES_FORMAT,
        "passages": [
            {"repository": p.repository, "source": p.source, "text": p.text} for p in passages
        ],
    }


def passages_from_json(document: Mapping[str, Any]) -> list[Passage]:
    """Read passages_to_json's document; ValueError when it is not one."""
    if document.get("format") != PASSAGES_FORMAT:
        raise ValueError(f"not a {PASSAGES_FORMAT} document")
    return [
        Passage(str(p["repository"]), str(p["source"]), str(p["text"]))
        for p in document.get("passages") or []
    ]


# Package manifests


def _is_manifest(path: str) -> bool:
    return path.rsplit("/", 1)[-1] in MANIFESTS


def _manifest(path: str, body: str) -> tuple[str | None, list[str]]:
    """A manifest's (description, keywords); nothing when it does not parse."""
    try:
        document: Any = json.loads(body) if path.endswith(".json") else tomllib.loads(body)
    except ValueError:  # json.JSONDecodeError and tomllib.TOMLDecodeError both are
        return None, []
    if not isinstance(document, dict):
        return None, []
    tables = [document, document.get("project"), document.get("package")]
    tool = document.get("tool")
    if isinstance(tool, dict):
        tables.append(tool.get("poetry"))
    description: str | None = None
    keywords: list[str] = []
    for table in tables:
        if isinstance(table, dict):
            if isinstance(table.get("description"), str):
                description = description or _text(table["description"])
            for key in ("keywords", "categories"):
                if isinstance(table.get(key), list):
                    keywords += [k for k in table[key] if isinstance(k, str)]
    return description, keywords


# Cleaning a repository result's text


def _text(value: str | None) -> str | None:
    """value on one line, None when nothing is left."""
    value = " ".join(value.split()) if value else ""
    return value or None


def _texts(values: Iterable[str]) -> list[str]:
    return [text for value in values if (text := _text(value))]


def _topic(topic: str) -> str:
    return topic.replace("-", " ").replace("_", " ")


def _unique(items: Iterable[str | None]) -> tuple[str, ...]:
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if item and item.casefold() not in seen:
            seen.add(item.casefold())
            out.append(item)
    return tuple(out)


def _pairs(pairs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """The pairs whose both sides have text, cleaned."""
    for first, second in pairs:
        a, b = _text(first), _text(second)
        if a and b:
            yield a, b
