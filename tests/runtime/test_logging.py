"""Logs are JSON lines, and secrets never reach them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

SCRIPT = """
import logging
import os
from meshkit.logging import setup_logging
setup_logging("svc", secrets=["s3cr3t-value"])
log = logging.getLogger("x")
log.info("job %s started", "J1", extra={"job_id": "J1"})
log.warning("token ghp_abcdefghijklmnopqrstuvwxyz0123 and s3cr3t-value and Bearer abc.def.ghi")
try:
    raise RuntimeError("failed with s3cr3t-value")
except RuntimeError:
    log.exception("boom")
"""


def test_json_lines_with_extras_and_no_secrets() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stderr
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["msg"] == "job J1 started" and lines[0]["job_id"] == "J1"
    assert lines[0]["service"] == "svc" and lines[0]["level"] == "info"
    assert "s3cr3t" not in out and "ghp_" not in out and "abc.def.ghi" not in out
    assert "[REDACTED]" in lines[1]["msg"] and "RuntimeError" in lines[2]["exc"]


def test_setup_is_idempotent() -> None:
    from meshkit.logging import setup_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("a")
        setup_logging("b")
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


HOSTILE = """
import logging
import os
from meshkit.logging import setup_logging
setup_logging("svc")
logging.getLogger("x").warning("description %s", "bad \\ud800", extra={"repo": "r\\udc00"})
"""


def test_text_that_cannot_be_encoded_still_makes_one_line() -> None:
    # A strict stream (like a log file) refuses lone surrogates: the line must not need it.
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    out = subprocess.run(
        [sys.executable, "-c", HOSTILE], capture_output=True, text=True, check=True, env=env
    ).stderr
    [line] = [json.loads(line) for line in out.splitlines()]
    assert line["msg"] == "description bad \ufffd" and line["repo"] == "r\ufffd"
