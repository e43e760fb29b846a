"""A searchable bundle: its passages, their embeddings under one model, and lexical indexes.

Passages are grouped by repository (contiguous rows), which lets ranking take each
repository's best passage with one numpy reduction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from meshkit.domain.passages import Passage
from searchsvc.lexical import Bm25, TermMatcher

__all__ = ["SearchIndex", "build_index"]


@dataclass(frozen=True)
class SearchIndex:
    bundle_hash: str
    model_id: str
    """Which model's embedding space `vectors` are in."""
    tuned: bool
    passages: tuple[Passage, ...]
    vectors: np.ndarray
    """float32 (n, dim), L2-normalised; row i embeds passages[i]."""
    repositories: tuple[str, ...]
    """In bundle order; passages of repositories[j] are rows starts[j] .. starts[j+1]-1."""
    starts: np.ndarray
    bm25: Bm25
    terms: TermMatcher

    @property
    def nbytes(self) -> int:
        """An estimate of the memory this index holds (for the cache's bound)."""
        text = sum(len(p.text) + len(p.source) + len(p.repository) + 200 for p in self.passages)
        return int(self.vectors.nbytes + text + self.bm25.nbytes + self.terms.nbytes)


def build_index(
    *,
    bundle_hash: str,
    model_id: str,
    tuned: bool,
    passages: Sequence[Passage],
    vectors: np.ndarray,
    terms: Mapping[str, Sequence[str]],
) -> SearchIndex:
    """Index passages (grouped by repository, in order) embedded as vectors."""
    if len(passages) != vectors.shape[0]:
        raise ValueError(f"{len(passages)} passages but {vectors.shape[0]} embeddings")
    repositories: list[str] = []
    starts: list[int] = []
    for row, passage in enumerate(passages):
        if not repositories or repositories[-1] != passage.repository:
            if passage.repository in repositories:
                raise ValueError(f"passages of {passage.repository} are not contiguous")
            repositories.append(passage.repository)
            starts.append(row)
    return SearchIndex(
        bundle_hash=bundle_hash,
        model_id=model_id,
        tuned=tuned,
        passages=tuple(passages),
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        repositories=tuple(repositories),
        starts=np.asarray(starts, dtype=np.int64),
        bm25=Bm25([f"{p.source} {p.text}" for p in passages]),
        terms=TermMatcher({r: terms.get(r, ()) for r in repositories}),
    )
