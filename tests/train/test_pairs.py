"""Training pairs vary their phrasing; held-out queries are phrased differently."""

from __future__ import annotations

import re
from collections import Counter

from tests.train.support import bundle, repo, sample_bundle
from trainsvc.pairs import (
    HELD_OUT_TERM_TEMPLATES,
    TRAIN_TERM_TEMPLATES,
    build_pairs,
    keyword_query,
)


def _template_of(query: str, templates: tuple[str, ...], term: str) -> str | None:
    return next((t for t in templates if t.format(term) == query), None)


def test_pairs_cover_every_kind_of_query() -> None:
    pairs = build_pairs(sample_bundle(), seed=1, max_pairs=10_000)
    queries = [p.query for p in pairs.train]
    assert "tell me about zig-tracer" in queries  # the repository's name
    assert "Why not Arduino?" in queries  # an FAQ question
    assert "Power budget" in queries  # a specific README heading
    assert any(
        q.startswith("loans ") or q.endswith(" loans module of a project") for q in queries
    )  # a component
    used = Counter(
        t
        for p in pairs.train
        for term in ("Zig", "MQTT", "PyTorch", "Go", "Elixir", "FastAPI")
        if (t := _template_of(p.query, TRAIN_TERM_TEMPLATES, term))
    )
    assert len(used) >= 3, "term queries use several phrasings"
    assert all(p.query and p.passage for p in pairs.train)
    # every pair's passage is text of its own repository (a cloze pair's is a passage less
    # one sentence)
    words = {
        r: set(" ".join(x.text for x in pairs.passages if x.repository == r).split())
        for r in {p.repository for p in pairs.train}
    }
    assert all(set(p.passage.split()) <= words[p.repository] for p in pairs.train)


def test_held_out_queries_use_other_phrasings_than_training() -> None:
    pairs = build_pairs(sample_bundle(), seed=1, max_pairs=10_000)
    train_queries = {p.query.casefold() for p in pairs.train}
    assert pairs.held_out
    assert not train_queries & {q.query.casefold() for q in pairs.held_out}
    train_stems = {t.format("") for t in TRAIN_TERM_TEMPLATES}
    for query in pairs.held_out:
        if query.kind == "term":
            assert any(
                re.fullmatch(re.escape(t).replace(r"\{\}", ".+"), query.query)
                for t in HELD_OUT_TERM_TEMPLATES
            ), query
            assert not any(query.query.startswith(s) and s.strip() for s in train_stems)
    kinds = Counter(q.kind for q in pairs.held_out)
    assert kinds["term"] and kinds["name"] == 6 and kinds["faq"] == 1


def test_terms_shared_by_several_repositories_are_never_held_out() -> None:
    pairs = build_pairs(sample_bundle(), seed=3, max_pairs=10_000)
    assert not any(q.query.endswith(("Python", "Python?")) for q in pairs.held_out)
    assert any("Python" in p.query for p in pairs.train)  # still trained on


def test_the_same_seed_gives_the_same_pairs() -> None:
    a = build_pairs(sample_bundle(), seed=7, max_pairs=10_000)
    b = build_pairs(sample_bundle(), seed=7, max_pairs=10_000)
    c = build_pairs(sample_bundle(), seed=8, max_pairs=10_000)
    assert a == b
    assert a.train != c.train


def test_max_pairs_caps_the_set_and_keeps_every_repository() -> None:
    many = bundle(
        "bob",
        [
            repo(
                f"r{i}",
                owner="bob",
                description=f"Repository {i}.",
                tech=[f"tech{i}-{j}" for j in range(30)],
            )
            for i in range(5)
        ],
    )
    capped = build_pairs(many, seed=1, max_pairs=20)
    assert len(capped.train) == 20
    assert Counter(p.repository for p in capped.train) == {f"bob/r{i}": 4 for i in range(5)}
    assert len(build_pairs(many, seed=1, max_pairs=10_000).train) > 150


def test_questions_become_keywords() -> None:
    assert keyword_query("How do you avoid data leakage between training and validation?") == (
        "avoid data leakage between training validation"
    )
    assert keyword_query("Why?") == ""
