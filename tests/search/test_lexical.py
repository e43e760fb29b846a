"""Lexical matching: tokens, BM25 normalised per query, verbatim names and technologies."""

from __future__ import annotations

import pytest

from searchsvc.lexical import Bm25, TermMatcher, content_tokens, tokenize


def test_tokens_keep_language_names_and_fold_plurals() -> None:
    assert tokenize("C++ and C# with Node.js; ESP32-MQTT snapshots") == [
        "c++",
        "and",
        "c#",
        "with",
        "node",
        "js",
        "esp32",
        "mqtt",
        "snapshot",
    ]
    assert content_tokens("Which projects use Zig? Show me your experience with snapshots") == [
        "zig",
        "snapshot",
    ]
    assert content_tokens("what does it do") == []


def test_bm25_is_one_for_a_full_match_and_zero_without_one() -> None:
    index = Bm25(["Zig path tracer", "MQTT firmware in C", "A chat in Elixir", "Rust CLI"])
    scores = index.scores("which project uses Zig")
    assert scores[0] == pytest.approx(1.0, abs=0.2) and scores[0] > 0.8
    assert list(scores[1:]) == [0, 0, 0]
    assert list(index.scores("kotlin")) == [0, 0, 0, 0]  # unknown words weigh nothing
    both = index.scores("zig and elixir")
    assert 0.3 < both[0] < 0.7 and 0.3 < both[2] < 0.7  # each matches half the query


def test_terms_match_whole_token_sequences_weighted_by_rarity() -> None:
    matcher = TermMatcher(
        {
            "o/a": ["air-station", "C", "MQTT", "home assistant", "Python"],
            "o/b": ["shelf-api", "Python", "FastAPI"],
            "o/c": ["chat", "Elixir", "Python"],
        }
    )
    assert matcher.matches("Home Assistant") == {"o/a": pytest.approx(1.0)}
    # Its terms cover three of the five content words (home, assistant, mqtt).
    found = matcher.matches("Home Assistant sensors over MQTT")
    assert set(found) == {"o/a"} and found["o/a"] == pytest.approx(0.6)
    assert matcher.matches("home") == {}  # half a term is no term
    assert matcher.matches("the air station") == {"o/a": pytest.approx(1.0)}
    python = matcher.matches("python")
    assert set(python) == {"o/a", "o/b", "o/c"} and python["o/a"] < 0.25  # shared by all
    assert matcher.matches("c++") == {}


def test_a_query_word_that_begins_a_compound_repository_name_counts_at_half_weight() -> None:
    matcher = TermMatcher(
        {
            "demo/homelab-ansible": [],
            "demo/leafscan": [],
            "demo/database-tools": ["database"],
            "demo/other": [],
        }
    )
    assert matcher.matches("home") == {"demo/homelab-ansible": pytest.approx(0.5)}  # unique
    found = matcher.matches("how do you run the servers at home?")
    assert set(found) == {"demo/homelab-ansible"}
    assert found["demo/homelab-ansible"] == pytest.approx(0.5 / 3)  # one word of three
    assert set(matcher.matches("leaf disease detection")) == {"demo/leafscan"}
    # Words under four letters never count; a whole part is a whole term's business.
    assert matcher.matches("web app at hom") == {}
    assert matcher.matches("database") == {"demo/database-tools": pytest.approx(1.0)}
    assert matcher.matches("database backups") == {"demo/database-tools": pytest.approx(0.5)}


def test_lexical_evidence_weighs_the_share_of_the_query_it_explains() -> None:
    # A question phrased unlike every passage that shares one incidental word with one of them
    # gets that word's share, not the full score a keyword query gets.
    index = Bm25(["Zig path tracer", "MQTT firmware in C", "A chat in Elixir", "Rust CLI"])
    keyword = index.scores("chat")[2]
    paraphrase = index.scores("an app where coworkers chat without leaking messages to ads")[2]
    assert keyword == pytest.approx(1.0, abs=0.2)
    assert 0 < paraphrase < keyword / 5


def test_a_term_among_many_other_words_counts_for_its_share() -> None:
    matcher = TermMatcher({"o/logs": ["log"], "o/trails": ["gpx", "hiking"]})
    assert matcher.matches("log") == {"o/logs": pytest.approx(1.0)}
    # One of five content words (app, logs, walk, up, mountain).
    assert matcher.matches("which app logs my walk up the mountain") == {
        "o/logs": pytest.approx(0.2)
    }
