"""The gateway forwards searches; it must never load torch (seconds of import, GBs of RSS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import gateway.__main__, gateway.server, meshkit.domain.passages, meshkit.service
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers", "numpy")
               if m in sys.modules)
print(",".join(heavy))
"""


def test_the_gateway_imports_no_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the gateway imported {result.stdout.strip()}"
