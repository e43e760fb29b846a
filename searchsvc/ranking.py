"""Ranking a bundle's repositories for a query: passages first, repositories from them.

Each passage p gets
    blended(p) = semantic * cos(query, p) + lexical * bm25(p)          (bm25 normalised to [0, 1])
and each repository r
    score(r) = max_p blended(p) + support * max(0, second best blended(p))
             + term * (weight of the most specific name/technology/topic of r the query names)
so one strongly matching passage decides, a second good one adds a little (a repository that
is about the query in several places beats one that mentions it once), and a technology or
name the model does not know still puts its repository first. The hit shows the repository's
best passage and its source.

How much lexical evidence may weigh is chosen per query, from its strength: the larger of the
best passage's normalised BM25 and the best term weight, both the share of the query they
explain. Evidence that explains less than `Weights.strong_lexical` of the query (an
incidental word shared with a paraphrase) may reorder the repositories below, never push down
the repository the model alone ranks first: the lexical and term weights are halved, then
quartered, then dropped, until that repository leads again. A query mostly made of a
repository's words (a name, a technology) keeps the full blend, which is what rescues names
the model does not know.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshkit.domain.passages import Passage
from searchsvc.index import SearchIndex

__all__ = ["BLENDED", "BM25_ONLY", "DEFAULT_TOP_K", "SEMANTIC_ONLY", "Hit", "Weights", "rank"]

DEFAULT_TOP_K = 10


@dataclass(frozen=True)
class Weights:
    semantic: float = 1.0
    lexical: float = 0.3
    support: float = 0.1
    term: float = 0.2
    strong_lexical: float = 0.2
    """Lexical evidence weaker than this may not push down the model's first repository;
    0 lets any evidence count in full. A fifth of the query: the highest round share that
    leaves every hand-written question of bench/demo_questions.json (the set the blend was
    developed on) where the full blend ranks it."""


BLENDED = Weights()
"""What the service ranks with."""
SEMANTIC_ONLY = Weights(semantic=1.0, lexical=0.0, support=0.0, term=0.0)
BM25_ONLY = Weights(semantic=0.0, lexical=1.0, support=0.0, term=0.5)
_LEXICAL_SCALES = (1.0, 0.5, 0.25, 0.0)
"""The shares of the lexical and term weights tried, in turn, for weak evidence."""


@dataclass(frozen=True)
class Hit:
    repository: str
    score: float
    passage: Passage


def rank(
    index: SearchIndex,
    query: str,
    query_vector: np.ndarray | None,
    *,
    top_k: int = DEFAULT_TOP_K,
    weights: Weights = BLENDED,
) -> list[Hit]:
    """The top_k repositories for query, best first (ties keep bundle order)."""
    count = len(index.passages)
    if count == 0 or top_k <= 0:
        return []
    semantic = np.zeros(count, dtype=np.float32)
    if weights.semantic and query_vector is not None:
        semantic += weights.semantic * (index.vectors @ query_vector.astype(np.float32))
    lexical = index.bm25.scores(query) if weights.lexical else np.zeros(count, dtype=np.float32)
    terms = np.zeros(len(index.repositories), dtype=np.float64)
    if weights.term:
        for repository, weight in index.terms.matches(query).items():
            terms[index.repositories.index(repository)] = weight
    strength = max(float(lexical.max()), float(terms.max()))
    weak = query_vector is not None and weights.semantic and strength < weights.strong_lexical
    first = int(np.argmax(_scores(index, semantic, weights)[0])) if weak else -1
    for scale in _LEXICAL_SCALES if weak else (1.0,):
        blended = semantic + (scale * weights.lexical) * lexical
        scores, best_rows = _scores(index, blended, weights)
        scores += (scale * weights.term) * terms
        if int(np.argmax(scores)) == first:  # the model's first repository still leads
            break
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [
        Hit(index.repositories[j], float(scores[j]), index.passages[int(best_rows[j])])
        for j in order
    ]


def _scores(
    index: SearchIndex, blended: np.ndarray, weights: Weights
) -> tuple[np.ndarray, np.ndarray]:
    """Each repository's score from its passages' blended scores (best, plus support for the
    second best), and the row of its best passage."""
    bounds = [*index.starts.tolist(), len(index.passages)]
    best_rows = np.empty(len(index.repositories), dtype=np.int64)
    scores = np.empty(len(index.repositories), dtype=np.float64)
    for j in range(len(index.repositories)):
        segment = blended[bounds[j] : bounds[j + 1]]
        top = int(np.argmax(segment))
        best_rows[j] = bounds[j] + top
        scores[j] = float(segment[top])
        if weights.support and len(segment) > 1:
            second = float(np.partition(segment, -2)[-2])
            scores[j] += weights.support * max(0.0, second)
    return scores, best_rows
