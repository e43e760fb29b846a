"""Held-out retrieval metrics: does a model put the right repository first?

A held-out query names the one repository that answers it. A model ranks every passage of
the bundle by cosine similarity to the query; each repository then counts with its best
passage (exactly how search ranks repositories, before lexical blending), and the query's
rank is the position of its repository in that order. Ties count against the model: a model
that gives every passage the same score ranks each repository last, not first. A paraphrase
query is ranked without the passage it was cut from (HeldOutQuery.hidden).

    mrr_at_10    mean of 1/rank over the queries, counting 0 when rank > 10
    recall_at_1  share of queries whose repository ranks first
    recall_at_5  share of queries whose repository ranks in the first five

Paraphrase queries count in MRR@10 like the others, and on their own too
(paraphrase_mrr_at_10, in the manifest, the job's EvalMetrics and its reason). A tuned model
is published only if it `beats` the base model: strictly better MRR@10, and on the paraphrase
queries no worse than the base. The second rule is a veto: a model that learns the bundle's
words by heart can gain on MRR@10 while losing the questions people phrase in their own words,
and those are the ones a user cannot rephrase their way out of.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from contextmesh.job.v1 import job_pb2

from meshkit.domain.passages import Passage
from trainsvc.pairs import HeldOutQuery

__all__ = [
    "Encoder",
    "Metrics",
    "beats",
    "evaluate",
    "loses_paraphrases",
    "metrics_from_ranks",
    "repository_ranks",
]

Encoder = Callable[[list[str]], np.ndarray]
"""Texts -> L2-normalised embeddings, one row per text."""

MIN_IMPROVEMENT = 1e-6
"""Below this the difference is float noise, not an improvement."""


@dataclass(frozen=True)
class Metrics:
    mrr_at_10: float
    recall_at_1: float
    recall_at_5: float
    queries: int
    paraphrase_mrr_at_10: float = 0.0
    """MRR@10 of the paraphrase queries alone (also counted in mrr_at_10)."""
    paraphrase_queries: int = 0

    def to_proto(self) -> job_pb2.EvalMetrics:
        return job_pb2.EvalMetrics(
            mrr_at_10=self.mrr_at_10,
            recall_at_1=self.recall_at_1,
            recall_at_5=self.recall_at_5,
            queries=self.queries,
            paraphrase_mrr_at_10=self.paraphrase_mrr_at_10,
            paraphrase_queries=self.paraphrase_queries,
        )

    @classmethod
    def from_proto(cls, message: job_pb2.EvalMetrics) -> Metrics:
        return cls(
            message.mrr_at_10,
            message.recall_at_1,
            message.recall_at_5,
            message.queries,
            message.paraphrase_mrr_at_10,
            message.paraphrase_queries,
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mrr_at_10": self.mrr_at_10,
            "recall_at_1": self.recall_at_1,
            "recall_at_5": self.recall_at_5,
            "queries": self.queries,
            "paraphrase_mrr_at_10": self.paraphrase_mrr_at_10,
            "paraphrase_queries": self.paraphrase_queries,
        }

    def summary(self) -> str:
        text = (
            f"MRR@10 {self.mrr_at_10:.3f}, recall@1 {self.recall_at_1:.3f}, "
            f"recall@5 {self.recall_at_5:.3f} on {self.queries} queries"
        )
        if self.paraphrase_queries:
            text += (
                f" (paraphrases MRR@10 {self.paraphrase_mrr_at_10:.3f} "
                f"on {self.paraphrase_queries})"
            )
        return text


def repository_ranks(
    scores: np.ndarray, passage_repos: Sequence[str], targets: Sequence[str]
) -> list[int]:
    """For each query row of scores (queries x passages), the 1-based rank of its target
    repository when repositories are ordered by their best passage; ties rank pessimistically.
    A target with no passage ranks after every repository."""
    repos = sorted(set(passage_repos))
    column = {repo: i for i, repo in enumerate(repos)}
    best = np.full((scores.shape[0], len(repos)), -np.inf, dtype=np.float64)
    owner = np.array([column[r] for r in passage_repos], dtype=np.int64)
    for j in range(len(repos)):
        mask = owner == j
        if mask.any():
            best[:, j] = scores[:, mask].max(axis=1)
    ranks = []
    for i, target in enumerate(targets):
        if target not in column:
            ranks.append(len(repos) + 1)
            continue
        mine = best[i, column[target]]
        others = np.delete(best[i], column[target])
        ranks.append(1 + int(np.count_nonzero(others >= mine)))
    return ranks


def metrics_from_ranks(ranks: Sequence[int], paraphrase_ranks: Sequence[int] = ()) -> Metrics:
    """Metrics over ranks; paraphrase_ranks are those of the paraphrase queries among them."""
    if not ranks:
        return Metrics(0.0, 0.0, 0.0, 0)
    n = len(ranks)
    return Metrics(
        mrr_at_10=_mrr_at_10(ranks),
        recall_at_1=sum(1 for r in ranks if r == 1) / n,
        recall_at_5=sum(1 for r in ranks if r <= 5) / n,
        queries=n,
        paraphrase_mrr_at_10=_mrr_at_10(paraphrase_ranks),
        paraphrase_queries=len(paraphrase_ranks),
    )


def _mrr_at_10(ranks: Sequence[int]) -> float:
    return sum(1.0 / r for r in ranks if r <= 10) / len(ranks) if ranks else 0.0


def evaluate(
    encode: Encoder,
    passages: Sequence[Passage],
    held_out: Sequence[HeldOutQuery],
    *,
    passage_vectors: np.ndarray | None = None,
) -> tuple[Metrics, np.ndarray]:
    """Metrics of one model on the held-out queries, and the passage embeddings it computed
    (returned so that a published model's passages are not embedded twice)."""
    if passage_vectors is None:
        passage_vectors = encode([p.text for p in passages])
    if not held_out or not passages:
        return metrics_from_ranks([]), passage_vectors
    query_vectors = encode([q.query for q in held_out])
    scores = query_vectors @ passage_vectors.T
    for row, query in enumerate(held_out):
        if query.hidden:
            scores[row, [i for i, p in enumerate(passages) if p.text == query.hidden]] = -np.inf
    ranks = repository_ranks(
        scores, [p.repository for p in passages], [q.repository for q in held_out]
    )
    paraphrase = [r for r, q in zip(ranks, held_out, strict=True) if q.kind == "paraphrase"]
    return metrics_from_ranks(ranks, paraphrase), passage_vectors


def beats(tuned: Metrics, base: Metrics) -> bool:
    """Whether the tuned model should replace the base model: strictly better MRR@10 over
    every held-out query, and not worse on the paraphrases alone (when there are any)."""
    return tuned.mrr_at_10 > base.mrr_at_10 + MIN_IMPROVEMENT and not loses_paraphrases(tuned, base)


def loses_paraphrases(tuned: Metrics, base: Metrics) -> bool:
    """Whether the tuned model ranks the paraphrase queries worse than the base model."""
    return bool(tuned.paraphrase_queries) and (
        tuned.paraphrase_mrr_at_10 < base.paraphrase_mrr_at_10 - MIN_IMPROVEMENT
    )
