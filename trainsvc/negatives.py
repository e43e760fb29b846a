"""Hard negatives: for each training query, the passage of another repository most likely to
be mistaken for its answer.

MultipleNegativesRankingLoss already contrasts a query with the other passages of its batch,
but those are random: they rarely share a word with it. Search goes wrong on the passage that
does ("logs" in a question about tracking hikes finds the log-analysis repository), so each
query also gets, as its own negative, the passage of the user's other repositories with the
most idf-weighted content words in common with it.

A passage that shares most of the query's weight could be a right answer too (a technology
two repositories use): it is never a negative. Such queries, and those sharing nothing with
another repository, get a random passage of another repository instead.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

from meshkit.domain.passages import Passage
from trainsvc.paraphrase import content_words

__all__ = ["MAX_SHARED_WEIGHT", "hard_negatives"]

MAX_SHARED_WEIGHT = 0.5
"""A negative shares less than this share of the query's idf weight."""


def hard_negatives(
    queries: Sequence[tuple[str, str]], passages: Sequence[Passage], rng: random.Random
) -> list[str]:
    """For each (query, repository), the text of its negative passage; '' for every query
    when the passages belong to fewer than two repositories."""
    if len({p.repository for p in passages}) < 2:
        return ["" for _ in queries]
    words = [content_words(p.text) for p in passages]
    postings: dict[str, list[int]] = defaultdict(list)
    for index, passage_words in enumerate(words):
        for word in passage_words:
            postings[word].append(index)
    count = len(passages)

    def idf(word: str) -> float:
        return math.log(1 + count / (1 + len(postings.get(word, ()))))

    out = []
    for query, repository in queries:
        weights = {w: idf(w) for w in content_words(query)}
        total = sum(weights.values())
        shared: dict[int, float] = defaultdict(float)
        for word, weight in weights.items():
            for index in postings.get(word, ()):
                if passages[index].repository != repository:
                    shared[index] += weight
        limit = MAX_SHARED_WEIGHT * total
        confusable = [(weight, -index) for index, weight in shared.items() if weight < limit]
        if confusable:
            out.append(passages[-max(confusable)[1]].text)
        else:
            others = [p for p in passages if p.repository != repository]
            out.append(rng.choice(others).text)
    return out
