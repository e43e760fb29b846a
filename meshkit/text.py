"""Text that every encoder accepts: outside strings made valid Unicode before anything stores them.

A Python string may hold lone surrogates (U+D800..U+DFFF): the JSON escape "\\ud800" decodes to
one, and so does an undecodable file name read with surrogateescape. They are the only Python
text that UTF-8 cannot encode, and everything contextmesh writes is UTF-8: canonical JSON
(meshkit.domain.bundle), protobuf string fields, NATS payloads, logs. One such character in a
repository description used to fail discovery on every delivery. So text from outside
(a source's listing and files, GitHub's JSON) passes through `encodable` where it is parsed,
and the rest of the system can assume it encodes.

A pair of surrogates that spells a character (a UTF-16 leftover) becomes that character; a
lone one becomes U+FFFD, the replacement character. The result is deterministic, so the same
input still gives the same bytes and the same content hash.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REPLACEMENT", "encodable", "encodable_json", "is_encodable"]

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_encodable(text: str) -> bool:
    """Whether UTF-8 can encode text (it holds no surrogate code point)."""
    return text.isascii() or _SURROGATE.search(text) is None


def encodable(text: str) -> str:
    """text with surrogate pairs joined and lone surrogates replaced by U+FFFD."""
    if is_encodable(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def encodable_json(value: Any) -> tuple[Any, int]:
    """A copy of a JSON-like value (dicts, lists, tuples, scalars) whose every string, keys
    included, is `encodable`, and how many strings had to change. When two keys of one
    object become equal, the first in order is kept. Recursive: callers pass documents whose
    nesting is already bounded (the tolerant reader cuts `raw` at 32 levels)."""
    counter = [0]
    return _walk(value, counter), counter[0]


def _walk(value: Any, counter: list[int]) -> Any:
    if isinstance(value, str):
        fixed = encodable(value)
        if fixed is not value:
            counter[0] += 1
        return fixed
    if isinstance(value, dict):
        copy: dict[Any, Any] = {}
        for key, item in value.items():
            copy.setdefault(_walk(key, counter), _walk(item, counter))
        return copy
    if isinstance(value, list | tuple):
        return [_walk(item, counter) for item in value]
    return value
