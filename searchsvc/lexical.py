"""Lexical matching: BM25 over passages, and exact matches of names and technologies.

The embedding model has never seen most proper names ("Zig", "MQTT", "sqlfluff"): their word
pieces carry little meaning, so a query naming one can rank its repository anywhere. The
words themselves are unambiguous, which is what lexical matching catches.

- `tokenize` lower-cases, splits at anything but letters and digits (keeping the '+' and '#'
  of "c++" and "c#"), and folds a plural 's' so "snapshots" meets "snapshot".
- `Bm25` scores passages for a query (k1 1.2, b 0.75) and normalises the score by the query's
  own weight: the sum of the idf of all its content words, a word no passage holds counting
  at the idf of the rarest. 1.0 means "every query word matched once in an average-length
  passage" whatever the query's length, and a question phrased unlike the repository, which
  shares one incidental word with some passage ("data", "home"), gets only that word's share:
  lexical evidence is as strong as the part of the query it explains.
- `TermMatcher` finds repositories whose name, technology or topic appears verbatim in the
  query, as a whole token sequence ("home assistant", "c++"), weighted by how few
  repositories share the term and by the share of the query's content words it covers (a
  query that is only "Docker Compose" is about it; one of nine words in a long paraphrase is
  a coincidence as often as a clue). Repository names are often compounds ("homelab",
  "leafscan"), so a query word of four or more letters that begins a part of a repository's
  name counts too, at half weight ("home" in "servers at home" for homelab-ansible). Only
  names: a technology such as "database" would answer every query about "data".
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["STOPWORDS", "Bm25", "TermMatcher", "content_tokens", "tokenize"]

_TOKEN = re.compile(r"[^\W_]+[+#]*")
# Function words, and the words people wrap around what they look for ("show me projects
# with ..."). They match everywhere and would drown the one word that matters.
_STOPWORD_TEXT = """
    a about all also an and any anything are as at be been but by can could did do does done
    for from had has have having he her his how i if in into is it its me my of on or our she
    so some someone something than that the their them then there these they this those to
    us was we were what when where which who whom why will with would you your yours
    built build builds building project projects repo repos repository repositories work
    works worked working show shows find experience example examples portfolio developer
    use uses used using knows know need looking look want thing things made make
    anyone involving involve involves rely relies relying
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens, plural 's' folded."""
    return [_fold(t) for t in _TOKEN.findall(text.lower())]


def _fold(token: str) -> str:
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def content_tokens(text: str) -> list[str]:
    """tokenize without stopwords (checked before folding too: "does" is not "doe")."""
    raw = _TOKEN.findall(text.lower())
    return [f for t in raw if t not in STOPWORDS and (f := _fold(t)) not in STOPWORDS]


class Bm25:
    """An inverted index over a fixed list of texts."""

    K1 = 1.2
    B = 0.75

    def __init__(self, texts: Sequence[str]) -> None:
        self.size = len(texts)
        lengths = np.zeros(self.size, dtype=np.float32)
        postings: dict[str, dict[int, int]] = defaultdict(dict)
        for doc, text in enumerate(texts):
            tokens = content_tokens(text)
            lengths[doc] = len(tokens)
            for token in tokens:
                postings[token][doc] = postings[token].get(doc, 0) + 1
        average = float(lengths.mean()) if self.size else 1.0
        self._norm = self.K1 * (1 - self.B + self.B * lengths / max(average, 1.0))
        self._postings = {
            token: (
                np.fromiter(docs.keys(), dtype=np.int32, count=len(docs)),
                np.fromiter(docs.values(), dtype=np.float32, count=len(docs)),
            )
            for token, docs in postings.items()
        }
        self.nbytes = sum(ids.nbytes + tf.nbytes + 64 for ids, tf in self._postings.values())

    def idf(self, token: str) -> float:
        found = self._postings.get(token)
        df = 0 if found is None else len(found[0])
        return math.log(1 + (self.size - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> np.ndarray:
        """Normalised BM25 of every text for query, in [0, 1]; zeros when nothing matches."""
        out = np.zeros(self.size, dtype=np.float32)
        weight = 0.0
        unmatched = self.idf("")  # the idf of a word no text holds: the highest there is
        for token in set(content_tokens(query)):
            found = self._postings.get(token)
            if found is None:
                weight += unmatched  # it cannot tell texts apart, but it is part of the query
                continue
            ids, tf = found
            idf = self.idf(token)
            weight += idf
            out[ids] += idf * tf * (self.K1 + 1) / (tf + self._norm[ids])
        if weight > 0:
            np.minimum(out / weight, 1.0, out=out)
        return out


class TermMatcher:
    """Which repositories' names, technologies or topics a query names verbatim."""

    def __init__(self, terms: Mapping[str, Iterable[str]]) -> None:
        owners: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for repository, names in terms.items():
            for name in names:
                tokens = tuple(tokenize(name))
                if tokens and not all(t in STOPWORDS for t in tokens):
                    owners[tokens].add(repository)
        total = max(len(terms), 1)
        # A term every repository has says nothing; one only a single repository has, a lot.
        self._terms = {
            tokens: (repos, math.log((1 + total) / len(repos)) / math.log(1 + total))
            for tokens, repos in owners.items()
        }
        self._longest = max((len(t) for t in self._terms), default=0)
        self._total = total
        self._name_parts = {
            repository: {p for p in tokenize(repository.rpartition("/")[2]) if len(p) > 4}
            for repository in terms
        }
        self.nbytes = sum(64 + 48 * len(r) for r, _ in self._terms.values())

    def matches(self, query: str) -> dict[str, float]:
        """repository -> weight in (0, 1]: that of the most specific term of it the query
        names, times the share of the query's content words its terms cover."""
        tokens = tokenize(query)
        content = content_tokens(query)
        weights: dict[str, float] = {}
        covered: dict[str, set[str]] = defaultdict(set)
        for start in range(len(tokens)):
            for end in range(start + 1, min(len(tokens), start + self._longest) + 1):
                entry = self._terms.get(tuple(tokens[start:end]))
                if entry is None:
                    continue
                repos, weight = entry
                for repo in repos:
                    weights[repo] = max(weights.get(repo, 0.0), weight)
                    covered[repo].update(t for t in tokens[start:end] if t in content)
        for repo, (weight, word) in self._name_prefix_matches(query).items():
            weights[repo] = max(weights.get(repo, 0.0), weight)
            covered[repo].add(word)
        words = max(len(set(content)), 1)
        return {
            repo: weight * min(1.0, max(len(covered[repo]), 1) / words)
            for repo, weight in weights.items()
        }

    def _name_prefix_matches(self, query: str) -> dict[str, tuple[float, str]]:
        """Repositories a query word begins a name part of ("home" -> "homelab"), at half the
        weight of a whole term shared by as many repositories, with that word."""
        words = {w for w in content_tokens(query) if len(w) >= 4}
        hits: dict[str, set[str]] = defaultdict(set)
        for repo, parts in self._name_parts.items():
            for word in words:
                if any(part != word and part.startswith(word) for part in parts):
                    hits[word].add(repo)
        found: dict[str, tuple[float, str]] = {}
        for word, repos in sorted(hits.items()):
            weight = 0.5 * math.log((1 + self._total) / len(repos)) / math.log(1 + self._total)
            for repo in repos:
                if weight > found.get(repo, (0.0, ""))[0]:
                    found[repo] = (weight, word)
        return found
