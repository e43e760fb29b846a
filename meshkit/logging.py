"""Logs: one JSON object a line on stderr (or plain text for a terminal), secrets redacted.

Every service calls `setup_logging(service, level, fmt, secrets=[...])` once. Extra fields
passed with `logger.info("...", extra={"job_id": ...})` appear as keys of the JSON object.
A line written while a span is current carries its trace_id and span_id (hex), and one
written inside a task carries the job_id the worker bound (`bind_job_id`), so logs join
the traces.
Redaction is a last line of defence: code must not log secrets in the first place. Lines are
made encodable (meshkit.text), so text from outside never breaks a log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar

from opentelemetry import trace

from meshkit.text import encodable

__all__ = ["RedactingFilter", "bind_job_id", "setup_logging"]

# Token shapes that must never reach a log even when nobody registered them as secrets.
_TOKEN_PATTERNS = [
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"),
    re.compile(r"(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)(AccountKey|SharedAccessSignature|sig)=[^;&\s]+"),
]
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_job_id: ContextVar[str | None] = ContextVar("contextmesh_job_id", default=None)


def bind_job_id(job_id: str | None) -> None:
    """Tag every later log line of the current context (a worker's task) with job_id."""
    _job_id.set(job_id or None)


class RedactingFilter(logging.Filter):
    """Replaces registered secrets and token-shaped strings in every record."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub("[REDACTED]", text)
        return encodable(text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class _JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = trace.format_trace_id(span.trace_id)
            entry["span_id"] = trace.format_span_id(span.span_id)
        job_id = _job_id.get()
        if job_id:
            entry["job_id"] = job_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return encodable(json.dumps(entry, ensure_ascii=False))


def setup_logging(
    service: str, *, level: str = "info", fmt: str = "json", secrets: Iterable[str | None] = ()
) -> None:
    """Route the root logger to stderr in the chosen format, with redaction."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log every reconnect at INFO; keep them to warnings.
    for noisy in ("nats", "httpx", "httpcore", "azure", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
