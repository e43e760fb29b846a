"""Training pairs and held-out queries, built from a bundle's own content.

Training pairs are (query, passage) pairs for MultipleNegativesRankingLoss: the query is
something a person could ask, the passage is text of the repository that answers it.

    a technology, skill or topic      "which project uses {term}", "{term} experience", ...
                                      -> the passage that lists it or, half the time, another
                                         passage of the repository that mentions it
    the repository's name             "tell me about {name}" -> its description
    a component                       "{component} component" -> the component's passage
    an FAQ entry                      the question -> the question and its answer
    a specific README heading         the heading -> the section under it
    a README sentence                 the sentence -> the rest of its section (inverse cloze:
                                      teaches the model the repository's own vocabulary)
    another passage's sentence        the sentence less the positive's words -> the description,
                                      and the description less a section's words -> the section
                                      (paraphrase: trainsvc.paraphrase)

Held-out queries are asked with DIFFERENT templates from the training ones ("I need someone
who knows {term}"), and FAQ questions are asked as bare keywords, so that evaluation measures
whether the model learned the facts, not the strings it was trained on. A held-out query names
one repository as its answer; terms shared by several repositories are therefore never held
out (their right answer is ambiguous), though they are still trained on. Held-out paraphrases
(kind 'paraphrase', at most MAX_HELD_OUT_PARAPHRASES) share no content word with the passages
they are ranked against; evaluation reports them on their own as well.

Everything is deterministic for a seed: sorted inputs, one random.Random(seed) for the
template pairs and one, derived from it, for paraphrases. The training
pairs are capped at max_pairs by taking the repositories' pairs in turn, so a big repository
cannot crowd out the small ones.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from meshkit.domain.documents import Bundle
from meshkit.domain.passages import Passage, RepositoryFacts, bundle_facts, passages_of
from trainsvc.paraphrase import held_out_paraphrases, paraphrase_pairs

__all__ = [
    "HELD_OUT_TERM_TEMPLATES",
    "MAX_HELD_OUT",
    "MAX_HELD_OUT_PARAPHRASES",
    "PAIRS_VERSION",
    "TRAIN_TERM_TEMPLATES",
    "HeldOutQuery",
    "Pair",
    "PairSet",
    "build_pairs",
    "keyword_query",
]

PAIRS_VERSION = 2
"""Bump when pairs change for the same bundle: it is part of a stored model's address."""

TRAIN_TERM_TEMPLATES = (
    "which project uses {}",
    "show me work with {}",
    "{} experience",
    "projects built with {}",
    "where did you use {}",
    "{}",
    "any {} work?",
    "repository that does {}",
)
HELD_OUT_TERM_TEMPLATES = (
    "has this developer done anything involving {}?",
    "I need someone who knows {}",
    "portfolio examples of {}",
    "what have you built that relies on {}",
)
TRAIN_NAME_TEMPLATES = ("tell me about {}", "what is {}", "{} project")
HELD_OUT_NAME_TEMPLATE = "give me an overview of the {} repository"
TRAIN_COMPONENT_TEMPLATES = ("{} component", "the {} module of a project")

MAX_HELD_OUT = 200
"""Evaluation encodes every held-out query twice (base and tuned): keep it bounded."""
MAX_HELD_OUT_PARAPHRASES = 64
"""On top of MAX_HELD_OUT: enough for a paraphrase MRR that one query does not swing."""
_HELD_OUT_PARAPHRASES_PER_REPOSITORY = 2
_MAX_CLOZE_PER_REPOSITORY = 6
_MIN_CLOZE_WORDS = 6
_MIN_CLOZE_REST_CHARS = 60
# Headings every README has say nothing about one repository: a heading made only of these
# words ("Getting started", "How it works") is not used as a query.
_GENERIC_HEADING_WORDS = """
    overview features usage installation install getting started quick start quickstart
    license licence contributing architecture requirements setup configuration development
    testing tests build building running roadmap status introduction about credits
    acknowledgements acknowledgments changelog examples example notes limitations results
    layout how it works design why faq support contact documentation docs api the and
"""
_QUESTION_WORD_TEXT = """
    how why what which who whom whose when where is are was were do does did can could
    should would will you your i we the a an of to in on for and or it its this that
    rather than with by
"""
_GENERIC_HEADINGS = frozenset(_GENERIC_HEADING_WORDS.split())
_QUESTION_WORDS = frozenset(_QUESTION_WORD_TEXT.split())
T = TypeVar("T")

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[\w+#.-]+")


@dataclass(frozen=True)
class Pair:
    """One training example: a query and a passage that answers it."""

    query: str
    passage: str
    repository: str


@dataclass(frozen=True)
class HeldOutQuery:
    """An evaluation query and the one repository that answers it."""

    query: str
    repository: str
    kind: str
    """'term', 'name', 'faq' or 'paraphrase': what the query was made from."""
    hidden: str = ""
    """The text of a passage ranked without for this query: the one a paraphrase was cut
    from."""


@dataclass(frozen=True)
class PairSet:
    train: tuple[Pair, ...]
    held_out: tuple[HeldOutQuery, ...]
    passages: tuple[Passage, ...]
    """Every passage of the bundle: what evaluation ranks and search serves."""
    repositories: int
    """Repositories with at least one passage."""


def build_pairs(
    bundle: Bundle,
    *,
    seed: int,
    max_pairs: int,
    max_held_out: int = MAX_HELD_OUT,
) -> PairSet:
    """Training pairs (at most max_pairs) and held-out queries for a bundle."""
    rng = random.Random(seed)
    paraphrase_rng = random.Random(f"{seed}:paraphrase")
    facts = bundle_facts(bundle)
    by_repo = {f.repository: passages_of(f) for f in facts}
    owners = _term_owners(facts)
    train: dict[str, list[Pair]] = {}
    held: dict[str, list[HeldOutQuery]] = {}
    held_paraphrases: dict[str, list[HeldOutQuery]] = {}
    for repo in facts:
        passages = by_repo[repo.repository]
        hidden = held_out_paraphrases(
            passages, paraphrase_rng, _HELD_OUT_PARAPHRASES_PER_REPOSITORY
        )
        hidden_texts = {p.text for _, p in hidden}
        train[repo.repository] = _train_pairs(repo, passages, rng, hidden_texts)
        train[repo.repository] += [
            Pair(query, positive.text, repo.repository)
            for query, positive in paraphrase_pairs(
                passages, paraphrase_rng, [p for _, p in hidden]
            )
        ]
        held[repo.repository] = _held_out(repo, owners, rng)
        held_paraphrases[repo.repository] = [
            HeldOutQuery(query, repo.repository, "paraphrase", hidden=p.text) for query, p in hidden
        ]
    train_queries = {p.query.casefold() for pairs in train.values() for p in pairs}
    for groups in (held, held_paraphrases):
        for repository, queries in groups.items():
            groups[repository] = [q for q in queries if q.query.casefold() not in train_queries]
    return PairSet(
        train=tuple(_round_robin(train, max_pairs, rng)),
        held_out=tuple(_round_robin(held, max_held_out, rng))
        + tuple(_round_robin(held_paraphrases, MAX_HELD_OUT_PARAPHRASES, paraphrase_rng)),
        passages=tuple(p for f in facts for p in by_repo[f.repository]),
        repositories=sum(1 for f in facts if by_repo[f.repository]),
    )


def keyword_query(question: str) -> str:
    """A question as the keywords a person would type: 'How do you avoid data leakage between
    training and validation?' -> 'avoid data leakage between training validation'."""
    words = [w.strip(".,;:!?()\"'") for w in question.split()]
    kept = [w for w in words if w and w.casefold() not in _QUESTION_WORDS]
    return " ".join(kept) if len(kept) >= 2 else ""


# Training pairs


def _train_pairs(
    repo: RepositoryFacts, passages: Sequence[Passage], rng: random.Random, hidden: set[str]
) -> list[Pair]:
    pairs: list[Pair] = []
    description = _first(passages, "description") or (passages[0] if passages else None)

    def add(query: str, passage: Passage | None) -> None:
        if passage is not None and query.strip():
            pairs.append(Pair(query.strip(), passage.text, repo.repository))

    for term, source in _terms(repo):
        listing = next(
            (p for p in passages if p.source == source and term.casefold() in p.text.casefold()),
            None,
        )
        mentions = [
            p for p in passages if p is not listing and term.casefold() in p.text.casefold()
        ]
        # One pair a term keeps training time linear in the bundle; the positive alternates
        # between the passage listing the term and one that uses it in context.
        use_mention = bool(mentions) and rng.random() < 0.5
        target = rng.choice(mentions) if use_mention else (listing or description)
        add(rng.choice(TRAIN_TERM_TEMPLATES).format(term), target)
    for template in TRAIN_NAME_TEMPLATES:
        add(template.format(repo.name), description)
    for component, _ in repo.components:
        add(
            rng.choice(TRAIN_COMPONENT_TEMPLATES).format(component),
            _first(passages, f"component: {component}"),
        )
    for question, _ in repo.faq:
        faq = next(
            (p for p in passages if p.source.startswith("FAQ: ") and p.text.startswith(question)),
            None,
        )
        add(question, faq)
    pairs += _heading_pairs(passages)
    pairs += _cloze_pairs(repo.repository, [p for p in passages if p.text not in hidden], rng)
    return pairs


def _heading_pairs(passages: Sequence[Passage]) -> list[Pair]:
    pairs = []
    seen: set[str] = set()
    for p in passages:
        document, _, heading = p.source.partition(": ")
        if not heading or document in ("component", "FAQ") or p.source in seen:
            continue
        seen.add(p.source)
        words = heading.casefold().split()
        if len(heading) >= 4 and not all(w in _GENERIC_HEADINGS for w in words):
            pairs.append(Pair(heading, p.text, p.repository))
    return pairs


def _cloze_pairs(repository: str, passages: Sequence[Passage], rng: random.Random) -> list[Pair]:
    """Inverse cloze: one sentence of a README passage asks for the rest of the passage."""
    candidates: list[Pair] = []
    for p in passages:
        if ": " not in p.source or p.source.startswith(("component:", "FAQ:")):
            continue
        sentences = _SENTENCE.split(p.text)
        if len(sentences) < 2:
            continue
        index = rng.randrange(len(sentences))
        sentence = sentences[index]
        rest = " ".join(sentences[:index] + sentences[index + 1 :])
        if len(_WORD.findall(sentence)) >= _MIN_CLOZE_WORDS and len(rest) >= _MIN_CLOZE_REST_CHARS:
            candidates.append(Pair(sentence, rest, repository))
    rng.shuffle(candidates)
    return candidates[:_MAX_CLOZE_PER_REPOSITORY]


# Held-out queries


def _held_out(
    repo: RepositoryFacts, owners: Mapping[str, int], rng: random.Random
) -> list[HeldOutQuery]:
    queries = [HeldOutQuery(HELD_OUT_NAME_TEMPLATE.format(repo.name), repo.repository, "name")]
    for term, _ in _terms(repo):
        if owners[term.casefold()] == 1:
            query = rng.choice(HELD_OUT_TERM_TEMPLATES).format(term)
            queries.append(HeldOutQuery(query, repo.repository, "term"))
    for question, _ in repo.faq:
        if keywords := keyword_query(question):
            queries.append(HeldOutQuery(keywords, repo.repository, "faq"))
    return queries


# Helpers


def _terms(repo: RepositoryFacts) -> list[tuple[str, str]]:
    """(term, source of the passage that lists it), each term once."""
    seen: set[str] = set()
    out = []
    for terms, source in (
        (repo.tech, "tech stack"),
        (repo.skills, "skills"),
        (repo.topics, "topics"),
    ):
        for term in terms:
            if term.casefold() not in seen and term.casefold() != repo.name.casefold():
                seen.add(term.casefold())
                out.append((term, source))
    return out


def _term_owners(facts: Sequence[RepositoryFacts]) -> Counter[str]:
    owners: Counter[str] = Counter()
    for repo in facts:
        owners.update({term.casefold() for term, _ in _terms(repo)})
    return owners


def _first(passages: Sequence[Passage], source: str) -> Passage | None:
    return next((p for p in passages if p.source == source), None)


def _round_robin(groups: Mapping[str, list[T]], limit: int, rng: random.Random) -> list[T]:
    """Up to limit items, one from each group in turn, each group shuffled first."""
    queues: dict[str, list[T]] = defaultdict(list)
    for key in sorted(groups):
        items = list(groups[key])
        rng.shuffle(items)
        queues[key] = items
    out: list[T] = []
    while len(out) < limit and any(queues.values()):
        for key in sorted(queues):
            if queues[key] and len(out) < limit:
                out.append(queues[key].pop(0))
    return out
