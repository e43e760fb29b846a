"""Queries in other words: text of a repository that shares no content word with its answer.

People describe a project in their own words ("keeps my home servers in shape"), not its
README's. The bundle holds no such questions, but every repository says what it is several
times over in different words: its description states the purpose, its README sections,
components and FAQ answers describe the parts. A sentence from one of them, less every
content word of the passage it asks for, is a question in other words about that passage:

    detail -> purpose    a sentence of a section, component or FAQ answer, less the words of
                         the description -> the description
    purpose -> detail    the description, less the words of a section -> that section

A model tuned on these cannot match them by shared words, so it learns what the repository's
vocabularies have in common.

Held-out paraphrases measure this on their own: a sentence of a section, less every content
word that any other passage of its repository uses, asked with that section hidden from the
ranking (evaluation skips it). Only the meaning can find its repository. No paraphrase or
cloze training query is cut from their sections: the held-out queries are built first.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence

from meshkit.domain.passages import Passage

__all__ = [
    "MIN_QUERY_WORDS",
    "content_words",
    "held_out_paraphrases",
    "paraphrase_pairs",
    "without_words",
]

MIN_QUERY_WORDS = 3
"""A query with fewer content words left says too little to be asked."""
MIN_KEPT_SHARE = 0.5
"""At least this share of a sentence's content words must survive: a sentence written mostly
in words of its answer leaves a list of leftovers, not a paraphrase."""
MAX_QUERY_WORDS = 24
"""Longer queries are cut: a question is a sentence, not a paragraph."""
_MAX_DETAIL_PER_REPOSITORY = 6
_MAX_PURPOSE_PER_REPOSITORY = 3
_MIN_PASSAGES_TO_HIDE = 4
"""A repository with fewer passages has none to spare for a held-out question."""

_WORD = re.compile(r"[a-z0-9]+(?:[+#]+|(?:['.-][a-z0-9]+)*)")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+")
# Words every text has, and the words of the query templates: they carry no meaning to share.
_STOPWORD_TEXT = """
    a about after all also an and any are as at be been before but by can could did do does
    for from has have how i if in into is it its just may me more most my no not of on one
    only or other our out over same so some such than that the their them then there these
    they this those through to too two up us use used uses using very was we were what when
    where which while who why will with without would you your
    project projects repository work show experience built tell need someone knows
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def content_words(text: str) -> set[str]:
    """The words of text that carry meaning: lower-cased, plural 's' folded, no stopwords or
    one- and two-letter words."""
    return {_fold(w) for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOPWORDS}


def without_words(text: str, words: Iterable[str]) -> str:
    """text less every word whose content form is in words (and its punctuation), at most
    MAX_QUERY_WORDS words; '' when fewer than MIN_QUERY_WORDS content words, or less than
    MIN_KEPT_SHARE of them, are left."""
    banned = set(words)
    kept = []
    for raw in text.split():
        word = raw.strip(".,;:!?()[]{}\"'`*")
        folded = _fold(word.lower())
        if word and folded not in banned:
            kept.append(word)
    kept = kept[:MAX_QUERY_WORDS]
    query = " ".join(kept)
    left = len(content_words(query))
    enough = left >= MIN_QUERY_WORDS and left >= MIN_KEPT_SHARE * len(content_words(text))
    return query if enough else ""


def held_out_paraphrases(
    passages: Sequence[Passage], rng: random.Random, limit: int
) -> list[tuple[str, Passage]]:
    """Up to limit (query, hidden passage) pairs of one repository: a sentence of the hidden
    passage less every content word of the repository's other passages."""
    if len(passages) < _MIN_PASSAGES_TO_HIDE:
        return []
    candidates = [p for p in passages if _is_detail(p)]
    rng.shuffle(candidates)
    out: list[tuple[str, Passage]] = []
    for hidden in candidates:
        if len(out) >= limit:
            break
        known = set().union(*(content_words(p.text) for p in passages if p.text != hidden.text))
        queries = [q for s in _sentences(hidden.text) if (q := without_words(s, known))]
        if queries:
            out.append((rng.choice(queries), hidden))
    return out


def paraphrase_pairs(
    passages: Sequence[Passage], rng: random.Random, hidden: Iterable[Passage] = ()
) -> list[tuple[str, Passage]]:
    """(query, positive passage) pairs of one repository, each query sharing no content word
    with its positive; the hidden passages are neither queried nor asked for."""
    skip = {p.text for p in hidden}
    usable = [p for p in passages if p.text not in skip]
    purpose = next((p for p in usable if p.source == "description"), None)
    if purpose is None:
        return []
    purpose_words = content_words(purpose.text)
    details = [p for p in usable if _is_detail(p)]
    detail: list[tuple[str, Passage]] = []
    for passage in details:
        sentences = _sentences(passage.text)
        rng.shuffle(sentences)
        query = next((q for s in sentences if (q := without_words(s, purpose_words))), "")
        if query:
            detail.append((query, purpose))
    rng.shuffle(detail)
    reverse: list[tuple[str, Passage]] = []
    for passage in details:
        if query := without_words(_description_of(purpose), content_words(passage.text)):
            reverse.append((query, passage))
    rng.shuffle(reverse)
    return detail[:_MAX_DETAIL_PER_REPOSITORY] + reverse[:_MAX_PURPOSE_PER_REPOSITORY]


def _is_detail(passage: Passage) -> bool:
    """A README or extra-file section, a component or an FAQ entry: text that describes a
    part of the repository (labelled '<document>: <heading>')."""
    return ": " in passage.source


def _description_of(passage: Passage) -> str:
    """A description passage without its '<name>: ' prefix (the name is not a paraphrase)."""
    return passage.text.partition(": ")[2] or passage.text


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text) if s.strip()]


def _fold(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word
