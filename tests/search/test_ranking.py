"""Ranking passages, then repositories from them, with lexical blending."""

from __future__ import annotations

import numpy as np
import pytest

from meshkit.domain.passages import Passage
from searchsvc.index import build_index
from searchsvc.ranking import BLENDED, SEMANTIC_ONLY, Weights, rank

PASSAGES = [
    Passage("o/tracer", "description", "tracer: a path tracer written in Zig"),
    Passage("o/tracer", "README: Materials", "GGX metals and glass with Fresnel terms"),
    Passage("o/station", "description", "station: ESP32 firmware that publishes over MQTT"),
    Passage("o/station", "README: Power budget", "four months on one battery cell"),
    Passage("o/station", "README: Updates", "signed over-the-air firmware updates"),
    Passage("o/chat", "description", "chat: real-time team chat in Elixir"),
]
TERMS = {"o/tracer": ["tracer", "Zig"], "o/station": ["station", "MQTT"], "o/chat": ["chat"]}


def index_with(vectors: list[list[float]]):  # type: ignore[no-untyped-def]
    matrix = np.array(vectors, dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return build_index(
        bundle_hash="h", model_id="m", tuned=False, passages=PASSAGES, vectors=matrix, terms=TERMS
    )


EYE = np.eye(6).tolist()


def test_a_repository_ranks_by_its_best_passage_and_shows_it() -> None:
    index = index_with(EYE)
    query = np.eye(6, dtype=np.float32)[3] * 0.9 + np.eye(6, dtype=np.float32)[1] * 0.3
    hits = rank(index, "how long does the battery last", query, weights=SEMANTIC_ONLY)
    assert [h.repository for h in hits] == ["o/station", "o/tracer", "o/chat"]
    assert hits[0].passage.source == "README: Power budget"
    assert hits[0].passage.text == "four months on one battery cell"  # a passage, not the repo
    assert hits[0].score == pytest.approx(0.9)


def test_a_name_the_model_does_not_know_is_rescued_lexically() -> None:
    # The "model" puts every query nearer the chat repository than the tracer: Zig means
    # nothing to it.
    index = index_with(EYE)
    confused = np.array([0.2, 0.2, 0.25, 0.2, 0.2, 0.45], dtype=np.float32)
    assert rank(index, "Zig", confused, weights=SEMANTIC_ONLY)[0].repository == "o/chat"
    hits = rank(index, "which project uses Zig", confused)
    assert hits[0].repository == "o/tracer"
    assert hits[0].passage.source == "description"
    assert rank(index, "MQTT", confused)[0].repository == "o/station"


def test_several_matching_passages_beat_one() -> None:
    # Both repositories' best passage scores the same; the station has a second good one.
    vectors = [[1, 0], [0, 1], [1, 0], [1, 0.2], [0, 1], [0, 1]]
    index = index_with(vectors)
    hits = rank(index, "firmware", np.array([1, 0], dtype=np.float32))
    assert [h.repository for h in hits[:2]] == ["o/station", "o/tracer"]
    assert hits[0].score > hits[1].score


def test_top_k_bounds_the_hits() -> None:
    index = index_with(EYE)
    query = np.eye(6, dtype=np.float32)[0]
    assert len(rank(index, "x", query, top_k=2)) == 2
    assert len(rank(index, "x", query, top_k=10)) == 3
    assert rank(index, "x", query, top_k=0) == []
    assert BLENDED.lexical > 0 and BLENDED.term > 0


def test_an_incidental_shared_word_never_overturns_a_clear_semantic_match() -> None:
    # The model clearly prefers the station for a paraphrase of its purpose (0.8 against 0.55);
    # the question shares one word, "chat", with the chat repository's description and names
    # its term. Blended, the station must still come first.
    index = index_with(EYE)
    query = np.array([0.0, 0.0, 0.0, 0.8, 0.0, 0.55], dtype=np.float32)
    question = "something on my balcony that will chat with the house about damp weather"
    assert rank(index, question, query, weights=SEMANTIC_ONLY)[0].repository == "o/station"
    assert rank(index, question, query)[0].repository == "o/station"
    # Asked for by name alone, the same word decides.
    assert rank(index, "chat", query)[0].repository == "o/chat"


def test_weak_lexical_evidence_never_pushes_down_the_models_first_repository() -> None:
    # A narrow semantic lead (0.6 against 0.55) for the station; the question shares "chat"
    # and "team" with the chat repository, a small share of its words.
    index = index_with(EYE)
    query = np.array([0.0, 0.0, 0.0, 0.6, 0.0, 0.55], dtype=np.float32)
    question = "a little box outside that will chat to my team about how damp and cold it gets"
    unguarded = Weights(strong_lexical=0.0)
    assert rank(index, question, query, weights=unguarded)[0].repository == "o/chat"
    hits = rank(index, question, query)
    assert [h.repository for h in hits[:2]] == ["o/station", "o/chat"]
    assert hits[0].score > hits[1].score  # scores still say the order they give
    # Evidence that explains most of the query keeps the full blend.
    assert rank(index, "team chat", query)[0].repository == "o/chat"
