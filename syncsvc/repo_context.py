"""Read a `.repo-context.json` tolerantly into the normalized "context" of a repository result.

Hand-written files drift from the published schema: `skill_manifest.technical_skills` as a
list of `{category, skills}` instead of `technical` strings, camelCase keys (`skillLevel`,
`projectStructure`, `outcomes.technicalSkills`), enum values outside the schema, sections
nobody planned for. The reader takes what it can from any of these shapes, keeps the whole
parsed document under "raw", and turns every problem into a warning: a malformed file is one
repository's warning, never the job's failure (guarantee 8 in docs/architecture.md). It never
raises for bad content, and its output always encodes: text that UTF-8 cannot encode (a lone
surrogate such as the valid JSON escape "\\ud800"), in values or keys, is replaced with
U+FFFD, with a warning.

Keys are matched ignoring case, `_` and `-`, so `project_identity`, `projectIdentity` and
`Project-Identity` are the same section. Lists keep the order of the document (primary
technologies first), drop repeats ignoring case (first spelling wins) and are capped; the
same bytes always give the same result.

Caps, so that one odd file cannot bloat a bundle or the training set built from it:
    MAX_ITEM_CHARS   200   name, type, scope, and each tech, skill, topic or component name
    MAX_TEXT_CHARS  2000   descriptions, FAQ questions and answers (longer text is cut)
    MAX_TECH 100, MAX_SKILLS 200, MAX_TOPICS 100, MAX_COMPONENTS 100, MAX_FAQ 100 entries
    MAX_RAW_DEPTH     32   nesting kept in "raw"; anything deeper becomes null
    MAX_WARNINGS      20   further problems are counted in one last warning
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from meshkit.text import encodable

__all__ = [
    "CONTEXT_FILE",
    "MAX_COMPONENTS",
    "MAX_FAQ",
    "MAX_ITEM_CHARS",
    "MAX_RAW_DEPTH",
    "MAX_SKILLS",
    "MAX_TECH",
    "MAX_TEXT_CHARS",
    "MAX_TOPICS",
    "MAX_WARNINGS",
    "ParsedContext",
    "parse_repo_context",
]

CONTEXT_FILE = ".repo-context.json"

MAX_ITEM_CHARS = 200
MAX_TEXT_CHARS = 2000
MAX_TECH = 100
MAX_SKILLS = 200
MAX_TOPICS = 100
MAX_COMPONENTS = 100
MAX_FAQ = 100
MAX_RAW_DEPTH = 32
MAX_WARNINGS = 20

# Lists nested in lists are flattened this far; deeper is junk, not structure.
_MAX_LIST_NESTING = 3
# The FAQ search visits at most this many nodes, whatever the shape of the document.
_MAX_FAQ_NODES = 20_000

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SEPARATORS = re.compile(r"[,;]")
# A JSON string (possibly unterminated), matched first so nothing inside one is touched.
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"?'
_COMMENT = re.compile(_STRING + r"|//[^\n]*|/\*.*?(?:\*/|\Z)", re.DOTALL)
_TRAILING_COMMA = re.compile(_STRING + r"|,(?=\s*[}\]])", re.DOTALL)
# What _load returns when there is no document: None is a document ("null").
_UNREADABLE = object()


@dataclass(frozen=True)
class ParsedContext:
    """The normalized context (None when nothing could be read) and what was wrong."""

    context: dict[str, Any] | None
    warnings: tuple[str, ...]


def parse_repo_context(data: bytes, *, max_bytes: int) -> ParsedContext:
    """Normalize the bytes of a `.repo-context.json`; never raises for bad content."""
    notes = _Notes()
    document = _load(data, max_bytes, notes)
    if document is _UNREADABLE:
        return ParsedContext(None, notes.done())
    if not isinstance(document, dict):
        notes.add(
            f"{CONTEXT_FILE} must hold a JSON object at the top level, found {_kind(document)}"
        )
        return ParsedContext(None, notes.done())
    raw = _bounded(document, 0, notes)
    context = _Extractor(raw, notes).context()
    return ParsedContext(context, notes.done())


# --- warnings -----------------------------------------------------------------------------


class _Notes:
    """Collects warnings: de-duplicated, in order, capped."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._seen: set[str] = set()
        self._more = 0

    def add(self, message: str) -> None:
        if message in self._seen:
            return
        self._seen.add(message)
        if len(self._items) < MAX_WARNINGS:
            self._items.append(message)
        else:
            self._more += 1

    def at(self, path: str, problem: str) -> None:
        self.add(f"{CONTEXT_FILE}: {path}: {problem}")

    def done(self) -> tuple[str, ...]:
        if self._more:
            return (*self._items, f"{CONTEXT_FILE}: {self._more} more problems not listed")
        return tuple(self._items)


# --- bytes to document --------------------------------------------------------------------


def _load(data: bytes, max_bytes: int, notes: _Notes) -> Any:
    """The parsed JSON value, or _UNREADABLE (with a warning) when there is none to be had."""
    if len(data) > max_bytes:
        notes.add(f"{CONTEXT_FILE} is too large: {len(data)} bytes, the limit is {max_bytes}")
        return _UNREADABLE
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Take what is readable: the broken bytes are usually inside one string.
        notes.add(
            f"{CONTEXT_FILE} is not valid UTF-8 (byte {exc.start}: {exc.reason}); "
            "undecodable bytes were replaced"
        )
        text = data.decode("utf-8-sig", errors="replace")
    if not text.strip():
        notes.add(f"{CONTEXT_FILE} is empty")
        return _UNREADABLE
    try:
        return _decode_json(text, notes)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        problem = f"{CONTEXT_FILE} is not valid JSON: {exc.msg} at {where}"
    except RecursionError:
        notes.add(f"{CONTEXT_FILE} is nested too deeply to read")
        return _UNREADABLE
    except ValueError:  # the one other failure: an integer longer than Python converts
        notes.add(f"{CONTEXT_FILE} is not valid JSON: a number has too many digits")
        return _UNREADABLE
    # Hand-edited files most often break on trailing commas and comments: forgive those two.
    relaxed = _relax(text)
    if relaxed is not None:
        try:
            document = _decode_json(relaxed, notes)
        except (ValueError, RecursionError):
            pass
        else:
            notes.add(f"{problem}; read it after removing trailing commas and comments")
            return document
    notes.add(problem)
    return _UNREADABLE


def _decode_json(text: str, notes: _Notes) -> Any:
    """json.loads without NaN or infinities, which no canonical JSON document may hold."""

    def constant(name: str) -> None:
        notes.add(f"{CONTEXT_FILE}: {name} is not a JSON number; read as null")

    def number(literal: str) -> float | None:
        value = float(literal)
        if math.isfinite(value):
            return value
        notes.add(f"{CONTEXT_FILE}: the number {literal[:40]} is out of range; read as null")
        return None

    return json.loads(text, parse_constant=constant, parse_float=number)


def _relax(text: str) -> str | None:
    """text without // and /* */ comments and trailing commas (outside strings), or None
    when there were none to remove. Regular expressions, not a Python loop: this runs on
    whole files of up to max_bytes."""
    without_comments = _COMMENT.sub(_keep_strings(" "), text)
    relaxed = _TRAILING_COMMA.sub(_keep_strings(""), without_comments)
    return None if relaxed == text else relaxed


def _keep_strings(replacement: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        token = match.group()
        return token if token.startswith('"') else replacement

    return replace


def _bounded(value: Any, depth: int, notes: _Notes, path: str = "") -> Any:
    """A copy of value cut at MAX_RAW_DEPTH, with every string (keys too) made encodable, so
    any consumer can serialize "raw" safely: canonical JSON, protobuf, logs."""
    if isinstance(value, str):
        return _encodable(value, path, notes)
    if isinstance(value, dict | list) and depth >= MAX_RAW_DEPTH:
        notes.add(f"{CONTEXT_FILE}: parts nested deeper than {MAX_RAW_DEPTH} levels were dropped")
        return None
    if isinstance(value, dict):
        copy: dict[str, Any] = {}
        for key, item in value.items():
            name = _encodable(key, path, notes, what="a key")
            # Two keys that differ only in unencodable text become equal: the first is kept.
            if name not in copy:
                copy[name] = _bounded(item, depth + 1, notes, _join(path, name))
        return copy
    if isinstance(value, list):
        return [_bounded(item, depth + 1, notes, _join(path, i)) for i, item in enumerate(value)]
    return value


def _encodable(text: str, path: str, notes: _Notes, what: str = "text") -> str:
    fixed = encodable(text)
    if fixed is not text:
        notes.at(
            path or "(top level)",
            f"{what} that cannot be encoded (a lone UTF-16 surrogate such as \\ud800) "
            "was replaced with U+FFFD",
        )
    return fixed


# --- document to context ------------------------------------------------------------------


def _norm(key: str) -> str:
    """Section and field names compare ignoring case, '_', '-' and spaces."""
    return "".join(ch for ch in key.casefold() if ch.isalnum())


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _clean(text: str, limit: int) -> str | None:
    """text with whitespace runs collapsed, control characters removed, cut to limit."""
    cleaned = " ".join(_CONTROL.sub(" ", text).split())
    if len(cleaned) > limit:
        cleaned = cleaned[:limit].rstrip()
    return cleaned or None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Obj:
    """A JSON object with lookups by normalized key; the first spelling in the file wins."""

    def __init__(self, value: dict[str, Any], path: str) -> None:
        self.path = path
        self.items = value
        self._index: dict[str, str] = {}
        for key in value:
            self._index.setdefault(_norm(key), key)

    def find(self, *names: str) -> tuple[str, Any] | None:
        """(path, value) of the first of names present, in the order of names."""
        for name in names:
            key = self._index.get(name)
            if key is not None:
                return _join(self.path, key), self.items[key]
        return None

    def keys_except(self, *names: str) -> Iterator[tuple[str, Any]]:
        """(path, value) of every field not named, in document order."""
        skip = set(names)
        for key, value in self.items.items():
            if _norm(key) not in skip:
                yield _join(self.path, key), value


class _Bag:
    """An ordered, case-insensitively de-duplicated, capped list of strings."""

    def __init__(self, label: str, cap: int, *, split: bool = False) -> None:
        self.label = label
        self.cap = cap
        self.split = split
        self.items: list[str] = []
        self._seen: set[str] = set()
        self.dropped = 0

    def add(self, text: str) -> None:
        key = text.casefold()
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.items) < self.cap:
            self.items.append(text)
        else:
            self.dropped += 1


# Field names, already normalized, in the order they are preferred.
_IDENTITY = ("projectidentity", "identity")
_TECH_SECTIONS = ("techstack", "technologystack", "technologies", "stack")
_TECH_KEYS = (
    "primary",
    "languages",
    "frameworks",
    "secondary",
    "keylibraries",
    "libraries",
    "dependencies",
    "databases",
    "infrastructure",
    "platforms",
    "developmenttools",
    "tools",
    "testingframeworks",
)
_SKILL_SECTIONS = ("skillmanifest", "skills")
_SKILL_KEYS = (
    "technical",
    "technicalskills",
    "domain",
    "domainexpertise",
    "professional",
    "professionalskills",
    "softskills",
)
_OUTCOME_KEYS = ("technicalskills", "technical", "softskills")
_NAME = ("name", "title", "projectname")
_DESCRIPTION = ("description", "summary", "overview", "purpose")
_TYPE = ("type", "projecttype", "repositorytype")
_TOPIC_FIELDS = ("topics", "tags", "keywords")
_COMPONENT_NAME = ("name", "title", "path", "module")
_COMPONENT_TEXT = ("description", "purpose", "summary", "responsibility", "role")
_ENTRY_NAME = ("name", "skill", "title", "label", "technology", "tech", "tool", "topic", "domain")
_ENTRY_LISTS = ("skills", "items", "applications", "technologies", "tools", "values", "topics")
_QUESTION = ("question", "q")
_ANSWER = ("answer", "a")
_FAQ_SECTIONS = ("faq", "faqs", "frequentlyaskedquestions")


class _Extractor:
    """Pulls the normalized fields out of one document, warning about what it cannot use."""

    def __init__(self, document: dict[str, Any], notes: _Notes) -> None:
        self.doc = _Obj(document, "")
        self.notes = notes
        self._faq_dropped = 0

    def context(self) -> dict[str, Any]:
        identity = self._section(self.doc, _IDENTITY)
        metadata = self._section(self.doc, ("metadata",))
        everywhere = [obj for obj in (identity, self.doc, metadata) if obj is not None]
        project = [obj for obj in (identity, self.doc) if obj is not None]
        # Built field by field in this order, so warnings come in the order of the document
        # format, not of whichever helper ran first.
        context: dict[str, Any] = {}
        context["name"] = self._first_text(everywhere, _NAME, MAX_ITEM_CHARS)
        context["description"] = self._first_text(project, _DESCRIPTION, MAX_TEXT_CHARS)
        context["type"] = self._first_text(everywhere, _TYPE, MAX_ITEM_CHARS)
        context["scope"] = self._first_text(project, ("scope",), MAX_ITEM_CHARS)
        context["tech"] = self._tech(metadata)
        context["skills"] = self._skills()
        context["topics"] = self._topics(identity, metadata)
        context["components"] = self._components()
        context["faq"] = self._faq()
        context["raw"] = self.doc.items
        understood = ("name", "description", "tech", "skills", "topics", "components", "faq")
        if not any(context[field] for field in understood):
            self.notes.add(
                f"{CONTEXT_FILE} has none of the sections this reader understands "
                "(project_identity, tech_stack, skill_manifest, topics); kept it as raw"
            )
        return context

    # sections and single values

    def _section(self, obj: _Obj, names: tuple[str, ...]) -> _Obj | None:
        found = obj.find(*names)
        if found is None:
            return None
        path, value = found
        if isinstance(value, dict):
            return _Obj(value, path)
        self.notes.at(path, f"expected an object, found {_kind(value)}")
        return None

    def _text(self, path: str, value: Any, limit: int) -> str | None:
        if isinstance(value, str):
            return _clean(value, limit)
        self.notes.at(path, f"expected text, found {_kind(value)}")
        return None

    def _first_text(self, objs: list[_Obj], names: tuple[str, ...], limit: int) -> str | None:
        """The first usable text among names (in order) of objs (in order). Only the first,
        canonical name warns when it holds something else: the aliases are guesses."""
        for obj in objs:
            for index, name in enumerate(names):
                found = obj.find(name)
                if found is None:
                    continue
                path, value = found
                if isinstance(value, str):
                    text = _clean(value, limit)
                    if text is not None:
                        return text
                elif index == 0:
                    self.notes.at(path, f"expected text, found {_kind(value)}")
        return None

    # lists of strings

    def _strings(self, path: str, value: Any, depth: int = 0, split: bool = False) -> Iterator[str]:
        """Every string a list-like value holds, flattening the shapes files use. With split,
        text where a list belongs is read as a comma-separated list (right for technologies
        and topics, wrong for skills, which may hold commas)."""
        if isinstance(value, list):
            if depth > _MAX_LIST_NESTING:
                self.notes.at(path, "lists nested too deeply; skipped")
                return
            for index, item in enumerate(value):
                yield from self._item(_join(path, index), item, depth + 1)
        elif isinstance(value, dict):
            yield from self._entry(path, value, depth)
        elif isinstance(value, str):
            how = "split it at commas" if split else "kept it as one item"
            self.notes.at(path, f"expected a list, found text; {how}")
            for part in _SEPARATORS.split(value) if split else (value,):
                text = _clean(part, MAX_ITEM_CHARS)
                if text is not None:
                    yield text
        else:
            self.notes.at(path, f"expected a list, found {_kind(value)}")

    def _item(self, path: str, item: Any, depth: int) -> Iterator[str]:
        if isinstance(item, str):
            text = _clean(item, MAX_ITEM_CHARS)
            if text is not None:
                yield text
        elif isinstance(item, list | dict):
            yield from self._strings(path, item, depth)
        else:
            self.notes.at(path, f"expected text, found {_kind(item)}")

    def _entry(self, path: str, value: dict[str, Any], depth: int) -> Iterator[str]:
        """An object standing for one or more items: {name: ...}, {category, skills: [...]},
        {domain, applications: [...]}."""
        obj = _Obj(value, path)
        name = obj.find(*_ENTRY_NAME)
        lists = [found for key in _ENTRY_LISTS if (found := obj.find(key)) is not None]
        if name is None and not lists:
            self.notes.at(path, "expected text or a named entry, found an object without a name")
            return
        if name is not None:
            text = self._text(*name, MAX_ITEM_CHARS)
            if text is not None:
                yield text
        for list_path, items in lists:
            yield from self._strings(list_path, items, depth + 1)

    def _fill(self, bag: _Bag, path: str, value: Any) -> None:
        for text in self._strings(path, value, split=bag.split):
            bag.add(text)

    def _finish(self, bag: _Bag) -> list[str]:
        if bag.dropped:
            self.notes.add(
                f"{CONTEXT_FILE}: kept the first {bag.cap} {bag.label}, dropped {bag.dropped} more"
            )
        return bag.items

    def _fill_section(self, bag: _Bag, section: tuple[str, Any], known: tuple[str, ...]) -> None:
        """Known keys of a section first (in the order given), then its other lists."""
        path, value = section
        if not isinstance(value, dict):
            self._fill(bag, path, value)
            return
        obj = _Obj(value, path)
        for key in known:
            found = obj.find(key)
            if found is not None:
                self._fill(bag, *found)
        for other_path, other in obj.keys_except(*known):
            if isinstance(other, list):
                self._fill(bag, other_path, other)

    def _tech(self, metadata: _Obj | None) -> list[str]:
        bag = _Bag("technologies", MAX_TECH, split=True)
        section = self.doc.find(*_TECH_SECTIONS)
        if section is not None:
            self._fill_section(bag, section, _TECH_KEYS)
        for name in ("languages", "frameworks"):
            found = self.doc.find(name)
            if found is not None:
                self._fill(bag, *found)
        if metadata is not None:
            found = metadata.find("primarylanguage", "language")
            if found is not None and (text := self._text(*found, MAX_ITEM_CHARS)) is not None:
                bag.add(text)
        return self._finish(bag)

    def _skills(self) -> list[str]:
        bag = _Bag("skills", MAX_SKILLS)
        section = self.doc.find(*_SKILL_SECTIONS)
        if section is not None:
            self._fill_section(bag, section, _SKILL_KEYS)
        outcomes = self._section(self.doc, ("outcomes",))
        if outcomes is not None:
            for key in _OUTCOME_KEYS:
                found = outcomes.find(key)
                if found is not None:
                    self._fill(bag, *found)
        learning = self._section(self.doc, ("learningoutcomes",))
        if learning is not None:
            for path, value in learning.keys_except():
                if isinstance(value, list):
                    self._fill(bag, path, value)
        return self._finish(bag)

    def _topics(self, identity: _Obj | None, metadata: _Obj | None) -> list[str]:
        bag = _Bag("topics", MAX_TOPICS, split=True)
        for obj in (self.doc, identity, metadata):
            if obj is None:
                continue
            for name in _TOPIC_FIELDS:
                found = obj.find(name)
                if found is not None:
                    self._fill(bag, *found)
        return self._finish(bag)

    # components and FAQ

    def _components(self) -> list[dict[str, str]]:
        found: list[tuple[str, Any]] = []
        top = self.doc.find("components", "modules")
        if top is not None:
            found.append(top)
        for section_names in (("projectstructure", "structure"), ("architecture",)):
            section = self.doc.find(*section_names)
            if section is not None and isinstance(section[1], dict):
                obj = _Obj(section[1], section[0])
                for names in (("components", "modules"), ("keyfiles",)):
                    inner = obj.find(*names)
                    if inner is not None:
                        found.append(inner)
        seen: set[str] = set()
        components: list[dict[str, str]] = []
        dropped = 0
        for path, value in found:
            for component in self._component_list(path, value):
                key = component["name"].casefold()
                if key in seen:
                    continue
                seen.add(key)
                if len(components) < MAX_COMPONENTS:
                    components.append(component)
                else:
                    dropped += 1
        if dropped:
            self.notes.add(
                f"{CONTEXT_FILE}: kept the first {MAX_COMPONENTS} components, "
                f"dropped {dropped} more"
            )
        return components

    def _component_list(self, path: str, value: Any) -> Iterator[dict[str, str]]:
        if isinstance(value, dict):  # the schema's shape: {name: {type, path, description}}
            for key, item in value.items():
                name = _clean(key, MAX_ITEM_CHARS)
                if name is not None:
                    yield from self._component(_join(path, key), item, name)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from self._component(_join(path, index), item, None)
        else:
            self.notes.at(path, f"expected an object or a list, found {_kind(value)}")

    def _component(self, path: str, item: Any, name: str | None) -> Iterator[dict[str, str]]:
        """One component: {name: {...}} or {name: "text"} keyed by name, or a list entry
        ("name" or {name, description})."""
        description: str | None = None
        if isinstance(item, dict):
            obj = _Obj(item, path)
            if name is None and (found := obj.find(*_COMPONENT_NAME)) is not None:
                name = self._text(*found, MAX_ITEM_CHARS)
            if (found := obj.find(*_COMPONENT_TEXT)) is not None:
                description = self._text(*found, MAX_TEXT_CHARS)
            if name is None:
                self.notes.at(path, "a component without a name; skipped")
        elif isinstance(item, str):
            if name is None:
                name = _clean(item, MAX_ITEM_CHARS)
            else:
                description = _clean(item, MAX_TEXT_CHARS)
        else:
            self.notes.at(path, f"expected a component, found {_kind(item)}")
        if name is not None:
            yield {"name": name, "description": description or ""}

    def _faq(self) -> list[dict[str, str]]:
        """Every question/answer pair in the document, in document order: objects with a
        question and an answer, and FAQ sections that map questions to answers."""
        pairs: list[dict[str, str]] = []
        seen: set[str] = set()
        budget = _MAX_FAQ_NODES
        # Depth-first, children pushed in reverse so they pop in document order. A FAQ
        # section of questions-as-keys is pushed as (True, section) to be read as pairs.
        stack: list[tuple[bool, Any]] = [(False, self.doc.items)]
        while stack and budget > 0:
            is_faq_map, node = stack.pop()
            budget -= 1
            children: list[tuple[bool, Any]] = []
            if is_faq_map:
                for question, answer in node.items():
                    if isinstance(answer, str):
                        self._add_pair(pairs, seen, question, answer)
                    else:
                        children.append((False, answer))
            elif isinstance(node, dict):
                obj = _Obj(node, "")
                question, answer = obj.find(*_QUESTION), obj.find(*_ANSWER)
                if question is not None and answer is not None:
                    self._add_pair(pairs, seen, question[1], answer[1])
                    continue
                for key, value in node.items():
                    is_map = _norm(key) in _FAQ_SECTIONS and isinstance(value, dict)
                    children.append((is_map, value))
            elif isinstance(node, list):
                children = [(False, item) for item in node]
            stack.extend(reversed(children))
        if self._faq_dropped:
            self.notes.add(
                f"{CONTEXT_FILE}: kept the first {MAX_FAQ} FAQ entries, "
                f"dropped {self._faq_dropped} more"
            )
        return pairs

    def _add_pair(
        self, pairs: list[dict[str, str]], seen: set[str], question: Any, answer: Any
    ) -> None:
        if not isinstance(question, str) or not isinstance(answer, str):
            return
        q, a = _clean(question, MAX_TEXT_CHARS), _clean(answer, MAX_TEXT_CHARS)
        if q is None or a is None or q.casefold() in seen:
            return
        seen.add(q.casefold())
        if len(pairs) < MAX_FAQ:
            pairs.append({"question": q, "answer": a})
        else:
            self._faq_dropped += 1
