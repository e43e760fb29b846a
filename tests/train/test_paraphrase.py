"""Paraphrase pairs share no content word with their answer; held-out ones are asked without
their own passage and share nothing with the rest of their repository."""

from __future__ import annotations

import random

from meshkit.domain.passages import Passage
from tests.train.support import sample_bundle
from trainsvc.pairs import build_pairs
from trainsvc.paraphrase import (
    content_words,
    held_out_paraphrases,
    paraphrase_pairs,
    without_words,
)

STATION = [
    Passage("o/station", "description", "station: a balcony sensor that reports air quality."),
    Passage(
        "o/station",
        "README: Power budget",
        "Awake two seconds at 120 mA, asleep otherwise. Four months on one battery cell.",
    ),
    Passage(
        "o/station",
        "README: Updates",
        "Signed firmware images are fetched over HTTPS and rolled back when a check fails.",
    ),
    Passage("o/station", "FAQ: Why C?", "Why C? Direct control of deep sleep and radio timing."),
]


def test_content_words_drop_function_words_and_fold_plurals() -> None:
    assert content_words("The sensors of a station report it") == {"sensor", "station", "report"}


def test_without_words_removes_the_answer_vocabulary_or_gives_up() -> None:
    query = without_words("Signed firmware images are fetched over HTTPS.", {"firmware"})
    assert query == "Signed images are fetched over HTTPS"
    assert without_words("air quality sensor readings", {"air", "quality", "sensor"}) == ""


def test_paraphrase_pairs_share_no_content_word_with_their_positive() -> None:
    pairs = paraphrase_pairs(STATION, random.Random(1))
    assert pairs
    sources = {positive.source for _, positive in pairs}
    assert "description" in sources  # detail -> purpose
    assert sources - {"description"}  # purpose -> detail
    for query, positive in pairs:
        assert not content_words(query) & content_words(positive.text), (query, positive)


def test_held_out_paraphrases_hide_their_passage_and_share_nothing_with_the_rest() -> None:
    held = held_out_paraphrases(STATION, random.Random(3), limit=1)
    assert len(held) == 1
    query, hidden = held[0]
    others = set().union(*(content_words(p.text) for p in STATION if p is not hidden))
    assert not content_words(query) & others
    assert content_words(query) <= content_words(hidden.text)
    # A hidden passage is never a training query's source or answer.
    for train_query, positive in paraphrase_pairs(STATION, random.Random(3), [hidden]):
        assert positive is not hidden
        assert not content_words(train_query) <= content_words(hidden.text)
    assert held_out_paraphrases(STATION[:3], random.Random(3), limit=1) == []  # too few


def test_the_bundle_pairs_carry_paraphrases_and_held_out_ones_apart() -> None:
    pairs = build_pairs(sample_bundle(), seed=1, max_pairs=10_000)
    passages = {p.text: p for p in pairs.passages}
    paraphrases = [q for q in pairs.held_out if q.kind == "paraphrase"]
    assert paraphrases
    for query in paraphrases:
        assert passages[query.hidden].repository == query.repository
        assert all(p.passage != query.hidden or p.query != query.query for p in pairs.train)
    described = {p.text for p in pairs.passages if p.source == "description"}
    assert any(
        p.passage in described and not content_words(p.query) & content_words(p.passage)
        for p in pairs.train
    )
