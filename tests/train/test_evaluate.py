"""Held-out metrics on a hand-made case whose answers are known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from meshkit.domain.passages import Passage
from trainsvc.evaluate import (
    Metrics,
    beats,
    evaluate,
    loses_paraphrases,
    metrics_from_ranks,
    repository_ranks,
)
from trainsvc.outcome import outcome_reason
from trainsvc.pairs import HeldOutQuery
from trainsvc.store import Manifest

# Three repositories; a and c have two passages each. Vectors are unit axes, so a query's
# score against a passage is the query's component on that passage's axis.
PASSAGES = [
    Passage("o/a", "description", "a1"),
    Passage("o/a", "skills", "a2"),
    Passage("o/b", "description", "b1"),
    Passage("o/c", "description", "c1"),
    Passage("o/c", "README", "c2"),
]
AXES = {text: np.eye(5)[i] for i, text in enumerate(["a1", "a2", "b1", "c1", "c2"])}
QUERIES = {
    "best is a2": [0.1, 0.9, 0.2, 0.3, 0.0],  # a ranks 1st
    "b beats nobody": [0.5, 0.1, 0.2, 0.0, 0.6],  # c 0.6 > a 0.5 > b 0.2: b ranks 3rd
    "c second": [0.7, 0.0, 0.1, 0.2, 0.3],  # a 0.7 > c 0.3 > b 0.1: c ranks 2nd
}
HELD_OUT = [
    HeldOutQuery("best is a2", "o/a", "term"),
    HeldOutQuery("b beats nobody", "o/b", "term"),
    HeldOutQuery("c second", "o/c", "term"),
]


def fake_encoder(texts: list[str]) -> np.ndarray:
    rows = [AXES[t] if t in AXES else np.array(QUERIES[t]) for t in texts]
    return np.array(rows, dtype=np.float32)


def test_ranks_count_each_repository_by_its_best_passage() -> None:
    metrics, vectors = evaluate(fake_encoder, PASSAGES, HELD_OUT)
    assert vectors.shape == (5, 5)
    assert metrics == Metrics(
        mrr_at_10=pytest.approx((1 + 1 / 3 + 1 / 2) / 3),
        recall_at_1=pytest.approx(1 / 3),
        recall_at_5=1.0,
        queries=3,
    )


def test_ties_rank_against_the_model() -> None:
    flat = np.ones((1, 5), dtype=np.float32)
    assert repository_ranks(flat, [p.repository for p in PASSAGES], ["o/a"]) == [3]
    assert repository_ranks(flat, [p.repository for p in PASSAGES], ["o/missing"]) == [4]


def test_mrr_counts_only_the_first_ten() -> None:
    metrics = metrics_from_ranks([1, 2, 10, 11])
    assert metrics.mrr_at_10 == pytest.approx((1 + 0.5 + 0.1 + 0) / 4)
    assert metrics.recall_at_1 == 0.25 and metrics.recall_at_5 == 0.5
    assert metrics_from_ranks([]) == Metrics(0.0, 0.0, 0.0, 0)


def test_the_tuned_model_must_be_strictly_better() -> None:
    base = Metrics(0.5, 0.4, 0.9, 10)
    assert beats(Metrics(0.51, 0.3, 0.8, 10), base)  # MRR@10 decides
    assert not beats(Metrics(0.5, 0.9, 1.0, 10), base)
    assert not beats(Metrics(0.4, 0.9, 1.0, 10), base)
    assert Metrics.from_proto(base.to_proto()) == base


def test_a_tuned_model_that_loses_paraphrases_is_vetoed() -> None:
    # Better overall by learning the bundle's words, worse on questions in other words.
    base = Metrics(0.5, 0.4, 0.9, 10, paraphrase_mrr_at_10=0.6, paraphrase_queries=4)
    parrot = Metrics(0.7, 0.6, 1.0, 10, paraphrase_mrr_at_10=0.5, paraphrase_queries=4)
    assert not beats(parrot, base)
    assert loses_paraphrases(parrot, base)
    assert "paraphrased questions worse" in outcome_reason(False, base, parrot)

    level = dataclasses.replace(parrot, paraphrase_mrr_at_10=0.6)
    assert beats(level, base), "as good on paraphrases and better overall: published"
    without = Metrics(0.7, 0.6, 1.0, 10)
    assert beats(without, Metrics(0.5, 0.4, 0.9, 10)), "no paraphrase queries: no veto"


def test_the_job_record_carries_the_paraphrase_figures() -> None:
    # The job's own metrics must explain a veto (tests/train/support.gate_decision reads them).
    metrics = Metrics(0.7, 0.6, 1.0, 10, paraphrase_mrr_at_10=0.25, paraphrase_queries=4)
    assert Metrics.from_proto(metrics.to_proto()) == metrics


def test_a_paraphrase_is_ranked_without_its_own_passage_and_counted_on_its_own() -> None:
    # Cut from c2, the query is nearest c2; hidden, the repository must be found by c1,
    # which a beats (0.7 > 0.3).
    cut = HeldOutQuery("b beats nobody", "o/c", "paraphrase", hidden="c2")
    plain = HeldOutQuery("c second", "o/c", "term")
    metrics, _ = evaluate(fake_encoder, PASSAGES, [cut, plain])
    assert metrics.paraphrase_queries == 1
    assert metrics.paraphrase_mrr_at_10 == pytest.approx(1 / 3)  # a 0.5, b 0.2 > c 0.0
    assert metrics.mrr_at_10 == pytest.approx((1 / 3 + 1 / 2) / 2)
    shown, _ = evaluate(fake_encoder, PASSAGES, [HeldOutQuery("b beats nobody", "o/c", "faq")])
    assert shown.mrr_at_10 == 1.0  # the same query with c2 in the ranking


def test_paraphrases_are_reported_in_the_summary() -> None:
    metrics = Metrics(0.5, 0.4, 0.9, 10, paraphrase_mrr_at_10=0.25, paraphrase_queries=4)
    assert metrics.summary().endswith("on 10 queries (paraphrases MRR@10 0.250 on 4)")
    assert "paraphrases" not in Metrics(0.5, 0.4, 0.9, 10).summary()


def test_a_manifest_keeps_paraphrase_metrics_and_reads_older_ones_without() -> None:
    base = Metrics(0.5, 0.4, 0.9, 10, paraphrase_mrr_at_10=0.6, paraphrase_queries=4)
    tuned = Metrics(0.7, 0.6, 1.0, 10, paraphrase_mrr_at_10=0.65, paraphrase_queries=4)
    manifest = Manifest("h", "c", True, base, tuned, "m", "e", {}, 3, 40, "cpu", 1.5)
    assert Manifest.from_json(manifest.to_json()) == manifest
    older = manifest.to_json()
    for side in ("base", "tuned"):
        del older[side]["paraphrase_mrr_at_10"], older[side]["paraphrase_queries"]
    assert Manifest.from_json(older).tuned == Metrics(0.7, 0.6, 1.0, 10)
