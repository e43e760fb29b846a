"""Hostile inputs for the fuzz tests: text with lone surrogates, JSON of any shape, protobuf
messages of any contract built field by field from their descriptors."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from meshkit.domain.ids import new_job_id, sync_msg_id

__all__ = [
    "context_documents",
    "context_files",
    "hostile_text",
    "json_values",
    "message_bytes",
]

# Characters that break naive code: lone surrogates (valid JSON escapes, unencodable in
# UTF-8), NUL and controls, line and paragraph separators, BOM, the replacement character.
_NASTY = st.sampled_from(
    ["\ud800", "\udfff", "\udc80", "\x00", "\x1f", "\x7f", "\x85", "\u2028", "\ufeff", "\ufffd"]
)
_CHAR = st.one_of(
    st.characters(codec=None),
    st.characters(categories=["Cs"]),
    _NASTY,
    st.sampled_from(list(' "\\/{}[],:')),
)

hostile_text = st.text(_CHAR, max_size=40)
"""Short text over all of Unicode, lone surrogates and control characters included."""


def _huge(text: str, length: int) -> str:
    return (text * (length // len(text) + 1))[:length]


_long_text = st.builds(_huge, st.text(_CHAR, min_size=1, max_size=8), st.integers(150, 2500))
"""Text of up to thousands of characters, past every cap of the reader."""

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
    _long_text,
)


def json_values(max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """Any JSON value (strings with surrogates, keys too), of any shape and type."""
    return st.recursive(
        _scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.dictionaries(hostile_text, children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


# Keys the reader looks for, in the spellings it accepts, so fuzzing reaches its extractors.
_KNOWN_KEYS = st.sampled_from(
    [
        "project_identity",
        "projectIdentity",
        "name",
        "description",
        "type",
        "scope",
        "tech_stack",
        "primary",
        "secondary",
        "key_libraries",
        "skill_manifest",
        "technical",
        "technical_skills",
        "skills",
        "topics",
        "tags",
        "components",
        "project_structure",
        "architecture",
        "key_files",
        "faq",
        "question",
        "answer",
        "learning_outcomes",
        "outcomes",
        "metadata",
        "category",
    ]
)


def context_documents() -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects shaped like a `.repo-context.json` with any values in any place."""
    key = st.one_of(_KNOWN_KEYS, hostile_text)
    return st.recursive(
        st.dictionaries(key, _scalars, max_size=4),
        lambda children: st.one_of(
            st.dictionaries(key, st.one_of(children, st.lists(children, max_size=3)), max_size=4),
            st.dictionaries(key, st.lists(st.one_of(_scalars, children), max_size=4), max_size=3),
        ),
        max_leaves=15,
    )


def _deep(depth: int, opener: str) -> bytes:
    closer = "]" if opener == "[" else "}"
    inner = '{"a":' if opener == "{" else "["
    return (inner * depth + "1" + closer * depth).encode()


def context_files() -> st.SearchStrategy[bytes]:
    """The bytes of a `.repo-context.json`: JSON as written by hand or by an attacker
    (surrogate escapes, comments, trailing commas), nesting past any limit, or noise."""
    document = st.one_of(context_documents(), json_values())
    written = st.builds(
        lambda doc, ascii_only, indent: json.dumps(
            doc, ensure_ascii=ascii_only, indent=indent
        ).encode("utf-8", "surrogatepass"),
        document,
        st.booleans(),
        st.sampled_from([None, 2]),
    )
    relaxed = st.builds(
        lambda body: b"// a comment\n" + body[:-1] + b",}" if body.endswith(b"}") else body,
        written,
    )
    huge = st.builds(
        lambda text, n: json.dumps({"project_identity": {"description": text * n}}).encode(),
        st.sampled_from(["\ud800", "a\udc00", "word ", "\U0001f600"]),
        st.integers(10_000, 100_000),
    )
    return st.one_of(
        written,
        relaxed,
        huge,
        st.builds(_deep, st.integers(1, 5000), st.sampled_from(["[", "{"])),
        st.binary(max_size=300),
        st.builds(lambda b: b"\xef\xbb\xbf" + b, written),
    )


# -- protobuf messages --------------------------------------------------------------------

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


_JOB = new_job_id()
_HASH = "a" * 64
# Values that pass a field's rules, by field name, so validation runs past the first field
# and fuzzing also reaches valid messages.
_PLAUSIBLE = {
    "job_id": _JOB,
    "id": _JOB,
    "task_id": sync_msg_id(_JOB, 0),
    "msg_id": sync_msg_id(_JOB, 0),
    "user": "demo",
    "repository": "octo/repo",
    "bundle_hash": _HASH,
    "content_hash": _HASH,
    "bundle_key": f"bundles/demo/{_HASH}.json",
    "result_key": f"repos/octo/repo/{_HASH}.json",
    "query": "which of my projects use MQTT?",
    "stream": "TRAIN",
}
_ANY_STRING = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "demo", "octo/repo", _JOB, _HASH, "x" * 300, "-bad-", "a/../b"]),
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        if field.name in _PLAUSIBLE:
            return st.one_of(st.just(_PLAUSIBLE[field.name]), _ANY_STRING)
        return _ANY_STRING
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    low, high = _INT_RANGES[kind]
    return st.one_of(st.integers(low, high), st.integers(-3, 1000).filter(lambda n: low <= n))


@st.composite
def _fill(draw: st.DrawFn, message: Message, depth: int) -> Message:
    descriptor: Descriptor = message.DESCRIPTOR
    for field in descriptor.fields:
        if draw(st.integers(0, 3)) == 0:  # most fields set: required ones are, mostly
            continue
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if is_message and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            target = getattr(message, field.name)
            for _ in range(draw(st.integers(0, 2))):
                key = draw(_scalar(key_field))
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    if depth > 0:
                        draw(_fill(target[key], depth - 1))
                else:
                    target[key] = draw(_scalar(value_field))
        elif is_message:
            if depth == 0:
                continue
            if field.is_repeated:
                for _ in range(draw(st.integers(0, 2))):
                    draw(_fill(getattr(message, field.name).add(), depth - 1))
            else:
                sub = getattr(message, field.name)
                sub.SetInParent()
                draw(_fill(sub, depth - 1))
        elif field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


def _mutate(data: bytes, cut: int, noise: bytes, where: int) -> bytes:
    at = where % (len(data) + 1)
    return data[: len(data) - cut % (len(data) + 1)] if not noise else data[:at] + noise + data[at:]


def message_bytes(message_type: type[Message]) -> st.SearchStrategy[bytes]:
    """Bytes a client or a publisher could send as message_type: a message built with any
    field values, the same cut short or with noise spliced in, or any bytes at all."""
    built = (
        st.builds(lambda: message_type())
        .flatmap(lambda m: _fill(m, 3))
        .map(lambda m: m.SerializeToString())
    )
    return st.one_of(
        built,
        st.builds(_mutate, built, st.integers(0, 50), st.binary(max_size=8), st.integers(0, 500)),
        st.binary(max_size=200),
    )
