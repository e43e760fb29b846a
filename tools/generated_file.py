"""Writing a generated file, or checking in CI that the committed one is what a generator
makes now (`--check`: exit 1 with a diff and the command that regenerates it)."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_or_check(output: Path, fresh: str, *, check: bool, command: str, source: str) -> int:
    relative = output.relative_to(ROOT)
    if check:
        current = output.read_text() if output.exists() else ""
        if current == fresh:
            print(f"{relative} is up to date")
            return 0
        print(f"{relative} is stale; run: {command}", file=sys.stderr)
        sys.stderr.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                fresh.splitlines(keepends=True),
                f"{relative} (committed)",
                f"{relative} (from {source})",
            )
        )
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(fresh)
    print(f"wrote {relative}")
    return 0
