#!/usr/bin/env python3
"""Check the blind evaluation questions in bench/blind_questions.json.

For every question of style "paraphrase", list each content word it shares with
its target repository: the repository's name and the text of its README and
.repo-context.json (and, to be stricter than required, any other file in the
repository's demo folder, e.g. ARCHITECTURE.md). Words are lowercased, split on
anything that is not a letter or digit (camelCase and hyphenated names are also
split into their parts), and compared after simple suffix stripping (s, es, ed,
ing, ly, with a trailing "e" restored and a doubled final consonant undone), so
"lending" matches "lend" and "shared" matches "share". A question word is also
flagged when it occurs inside the repository's name with the hyphens removed
("leaf" in "leafscan"). Possessive 's and one-character tokens are ignored.

Besides, it checks the shape of the file: 6 questions per repository, every
repository known, styles from the defined set, paraphrases a majority and at
least 3 per repository.

Exit status 1 if any paraphrase shares a content word or the shape is wrong.

Usage: python bench/check_blind_questions.py [--questions FILE] [--demo-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_QUESTIONS = ROOT / "bench" / "blind_questions.json"
DEFAULT_DEMO = ROOT / "meshctl" / "demo_repos"

STYLES = {"paraphrase", "domain", "natural", "keywords", "thin"}

# Function words and the few generic words the brief lets through.
STOPWORDS = set(
    """
    a an the this that these those some any every each no not nor
    i me my mine we us our you your yours he him his she her it its they them their
    who whom whose which what when where why how whether
    is am are was were be been being do does did doing done have has had having
    can could shall should will would may might must
    and or but if then than so as because while though although
    of in on at to from by with without for about into onto over under up down out off
    through across after before between during against per via like
    there here also just only very too
    all both either neither other another such own same
    project something someone anything thing things built build
    """.split()  # noqa: SIM905 - a word list reads better as prose lines
)

SUFFIXES = ("ing", "es", "ed", "ly", "s")
VOWELS = set("aeiou")


def split_words(text: str) -> list[str]:
    """Lowercased word tokens; camelCase parts are added beside the whole word."""
    out: list[str] = []
    text = re.sub(r"['\u2019]s\b", "", text)  # possessive 's
    for raw in re.findall(r"[A-Za-z0-9]+", text):
        out.append(raw.lower())
        parts = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+", raw)
        if len(parts) > 1:
            out.extend(p.lower() for p in parts)
    return [w for w in out if len(w) > 1]  # single letters and digits carry no content


def stems(word: str) -> set[str]:
    """The word and its candidate stems after simple suffix stripping."""
    forms = {word}
    for suf in SUFFIXES:
        if word.endswith(suf) and len(word) - len(suf) >= 2:
            base = word[: -len(suf)]
            forms.add(base)
            forms.add(base + "e")
            if len(base) >= 3 and base[-1] == base[-2] and base[-1] not in VOWELS:
                forms.add(base[:-1])
            if suf in ("es", "ed") and base.endswith("i"):
                forms.add(base[:-1] + "y")  # studies -> study, copied -> copy
    return forms


def repo_vocabulary(repo_dir: Path, name: str) -> set[str]:
    texts = [name.replace("-", " "), name]
    for path in sorted(repo_dir.iterdir()):
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    vocab: set[str] = set()
    for text in texts:
        for w in split_words(text):
            vocab |= stems(w)
    return vocab


def shared_words(question: str, vocab: set[str], name: str) -> list[str]:
    joined_name = name.replace("-", "").lower()
    hits = []
    for w in split_words(question):
        if w in STOPWORDS:
            continue
        if (stems(w) & vocab or (len(w) >= 3 and w in joined_name)) and w not in hits:
            hits.append(w)
    return hits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    ap.add_argument(
        "--demo-dir",
        type=Path,
        default=DEFAULT_DEMO,
        help="folder holding <user>/<repository>/ demo folders",
    )
    args = ap.parse_args()

    data = json.loads(args.questions.read_text(encoding="utf-8"))
    user = data["user"]
    user_dir = args.demo_dir / user
    repos = sorted(p.name for p in user_dir.iterdir() if p.is_dir())
    vocab = {r: repo_vocabulary(user_dir / r, r) for r in repos}

    problems = 0
    per_repo: Counter[str] = Counter()
    per_style: Counter[str] = Counter()
    para_per_repo: Counter[str] = Counter()
    seen_questions: set[str] = set()

    for i, q in enumerate(data["questions"]):
        text, target, style = q["question"], q["repository"], q["style"]
        owner, _, name = target.partition("/")
        if owner != user or name not in vocab:
            print(f"[{i}] unknown repository {target!r}")
            problems += 1
            continue
        if style not in STYLES:
            print(f"[{i}] unknown style {style!r}")
            problems += 1
        if text.lower() in seen_questions:
            print(f"[{i}] duplicate question {text!r}")
            problems += 1
        seen_questions.add(text.lower())
        per_repo[name] += 1
        per_style[style] += 1
        if style == "paraphrase":
            para_per_repo[name] += 1
            hits = shared_words(text, vocab[name], name)
            if hits:
                print(f"[{i}] {target}: {text!r} shares {', '.join(hits)}")
                problems += 1

    total = sum(per_repo.values())
    for r in repos:
        if per_repo[r] != 6:
            print(f"repository demo/{r} has {per_repo[r]} questions, expected 6")
            problems += 1
        if para_per_repo[r] < 3:
            print(f"repository demo/{r} has {para_per_repo[r]} paraphrases, expected at least 3")
            problems += 1
    if per_style["paraphrase"] * 2 <= total:
        print(f"paraphrases are {per_style['paraphrase']} of {total}, not a majority")
        problems += 1

    print(
        f"{total} questions; per style: "
        + ", ".join(f"{s} {per_style[s]}" for s in sorted(per_style))
    )
    print(
        "per repository (total/paraphrase): "
        + ", ".join(f"{r} {per_repo[r]}/{para_per_repo[r]}" for r in repos)
    )
    if problems:
        print(f"FAIL: {problems} problem(s)")
        return 1
    print("OK: no paraphrase shares a content word with its target repository")
    return 0


if __name__ == "__main__":
    sys.exit(main())
